"""Data-set generation: displaced supercells of a solid solution, each reproducible alone.

For each composition and each sample spec (phonon at T, uniform with amplitude A,
equilibrium) ``generate`` draws a fresh random ordering with exactly round(x n)
dopant sites, applies the displacement, and records x, T or A, method and the
structure's own seed, so every structure can be regenerated on its own.
"""

from __future__ import annotations

import numpy as np

from capml.data import StructureSet
from capml.sampling.displacements import supercell_force_constants, thermal, uniform
from capml.simulation.phonopy_io import load_phonopy
from capml.structures import System

METHODS = ("phonon", "uniform", "equilibrium")


def load_end_members(fc_cfg) -> dict[float, object]:
    """Phonopy objects with force constants of the x = 0 and x = 1 end members."""
    if fc_cfg is None or fc_cfg.get("x0") is None or fc_cfg.get("x1") is None:
        raise ValueError("phonon sampling needs end-member force constants: set "
                         "system.force_constants.x0 and .x1 to phonopy yaml files (make them "
                         "with `python simulate.py task=force_constants calculator=...`)")
    return {0.0: load_phonopy(fc_cfg.x0), 1.0: load_phonopy(fc_cfg.x1)}


def generate(system: System, samples, compositions, seed: int, *, end_members=None,
             cutoff_frequency: float = 1.0, id_prefix: str = "s",
             first_index: int = 0) -> StructureSet:
    """All structures described by ``samples`` (list of specs) at each composition.

    Ids count from ``first_index``; a non-zero one (structures appended to a file that
    holds ``first_index`` rows) draws the per-structure seeds from a stream of its own,
    so appended structures never repeat earlier ones.
    """
    specs = _expand(samples)
    n_total = len(specs) * len(compositions)
    root = np.random.SeedSequence(seed, spawn_key=(first_index,) if first_index else ())
    seeds = root.generate_state(n_total, dtype=np.uint64) % 2**63
    structures = []
    k = 0
    for x in compositions:
        fc_cache = {}
        for method, value in specs:
            s = int(seeds[k])
            rng = np.random.default_rng(s)
            atoms = system.random_solid_solution(x, rng)
            info = {"x": atoms.info["x"], "method": method, "seed": s, "source": "generate"}
            if method == "phonon":
                key = tuple(atoms.numbers)
                if key not in fc_cache:
                    fc_cache[key] = supercell_force_constants(end_members, atoms, info["x"])
                atoms = thermal(atoms, fc_cache[key], value, seed=s,
                                cutoff_frequency=cutoff_frequency)[0]
                info["temperature"] = value
            elif method == "uniform":
                atoms = uniform(atoms, value, rng)
                info["amplitude"] = value
            info["id"] = f"{id_prefix}{first_index + k:06d}"
            atoms.info = info
            structures.append(atoms)
            k += 1
    return StructureSet.from_atoms(structures)


def _expand(samples) -> list[tuple[str, float | None]]:
    """Sample specs -> [(method, T or A or None)] repeated ``per_value`` times."""
    out = []
    for spec in samples:
        method = spec.get("method")
        if method not in METHODS:
            raise ValueError(f"task.samples: method {method!r}, expected one of {METHODS}")
        per = int(spec.get("per_value", 1))
        if method == "phonon":
            values = list(spec["temperatures"])
        elif method == "uniform":
            values = list(spec["amplitudes"])
        else:
            values = [None]
        out += [(method, None if v is None else float(v)) for v in values for _ in range(per)]
    return out
