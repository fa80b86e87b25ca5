"""``simulate.py task=phonons``: harmonic phonons and a stability verdict.

Structures: ``task.input`` (a capml HDF5 file such as enumerate's
``ground_states.h5``, filtered by ``task.select`` and ``task.compositions``, or
any ase-readable file), or, with ``input: null``, one seeded random ordering of
the system at each composition. Structures not marked relaxed are relaxed first
(``relax: auto``). Force constants by finite displacements with the configured
calculator (MACE: displaced cells batched, float64).

Outputs per structure in ``task.output_dir/<id>/``: ``phonopy.yaml`` (force
constants, phonopy's format), ``band.yaml`` and ``total_dos.dat`` (phonopy's),
``band_dos.png``; for all structures ``stability.csv`` (verdict, lowest
frequency, its q-point, band and element character).
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from capml.simulation import phonons
from capml.simulation.forces import make_evaluator
from capml.simulation.phonopy_io import save_phonopy
from capml.structures import System
from capml.tasks.generate import compositions_of
from capml.tasks.relax import describe, load_structures, relax_with_fallbacks, structure_id

log = logging.getLogger(__name__)

RELAX_MODES = ("auto", True, False)


def structures_for(cfg: DictConfig) -> list:
    """Starting structures of a phonons/md run (see the module docstring)."""
    t = cfg.task
    system = System.from_config(cfg.system)
    comps = compositions_of(system, t.compositions)
    if t.input is None:
        seeds = np.random.SeedSequence(int(cfg.seed)).spawn(len(comps))
        out = []
        for x, ss in zip(comps, seeds):
            atoms = system.random_solid_solution(x, np.random.default_rng(ss))
            atoms.info.update(id=f"x{atoms.info['x']:.4f}-random", source="random ordering")
            out.append(atoms)
        return out
    atoms = load_structures(t.input, t.get("select"), t.get("index"))
    if isinstance(t.compositions, str) and t.compositions == "all":
        return atoms
    keep = [a for a in atoms if any(np.isclose(a.info.get("x", np.nan), x) for x in comps)]
    if not keep:
        have = sorted({round(float(a.info.get("x", np.nan)), 4) for a in atoms})
        raise ValueError(f"{t.input}: no structure with x in {[round(x, 4) for x in comps]} "
                         f"(task.compositions); the file has x = {have}")
    return keep


def run(cfg: DictConfig) -> Path:
    t = cfg.task
    if t.relax not in RELAX_MODES:
        raise ValueError(f"task.relax = {t.relax!r}: expected one of {RELAX_MODES}")
    atoms_list = structures_for(cfg)
    labeler = instantiate(cfg.calculator)
    build = partial(labeler.build, **labeler.settings)
    evaluator = partial(make_evaluator, build=build, engine=str(t.engine), dtype=str(t.dtype),
                        batch_size=t.batch_size)
    out_dir = Path(t.output_dir)
    rows = []
    for k, atoms in enumerate(atoms_list):
        name = structure_id(atoms, k)
        if t.relax is True or (t.relax == "auto" and atoms.info.get("method") != "relaxed"):
            res, note = relax_with_fallbacks(atoms, labeler, fmax=float(t.fmax),
                                             max_steps=int(t.max_steps),
                                             keep_symmetry=bool(t.keep_symmetry))
            res.note = note
            log.info("%s: relaxed first: %s", name, describe(res))
            atoms = res.atoms
        ph = phonons.force_constants(atoms, evaluator, supercell_matrix=list(t.supercell_matrix),
                                     primitive_matrix=_primitive(t.primitive_matrix),
                                     distance=float(t.distance), symprec=float(t.symprec))
        result = phonons.analyse(ph, mesh=_plain(t.mesh), npoints=int(t.npoints),
                                 tolerance=float(t.tolerance))
        sub = out_dir / name
        save_phonopy(ph, sub / "phonopy.yaml")
        if result["bands"] is not None:
            ph.write_yaml_band_structure(filename=str(sub / "band.yaml"))
        ph.write_total_dos(filename=str(sub / "total_dos.dat"))
        figure = phonons.plot(result, sub / "band_dos.png",
                              title=f"{name} ({labeler.level})")
        verdict = result["stability"]
        log.info("%s: %s", name, verdict.summary())
        rows.append({"id": name, "x": atoms.info.get("x", np.nan), "n_atoms": len(atoms),
                     "n_displacements": len(ph.supercells_with_displacements),
                     "level": labeler.level, **phonons.stability_row(verdict),
                     "force_constants": str(sub / "phonopy.yaml"), "figure": str(figure)})
    import pandas as pd

    table = pd.DataFrame(rows)
    table.to_csv(out_dir / "stability.csv", index=False)
    log.info("stability (tolerance %g THz):\n%s", float(t.tolerance),
             table[["id", "x", "stable", "min_frequency", "q_point", "n_imaginary"]]
             .to_string(index=False))
    return out_dir / "stability.csv"


def _primitive(value):
    value = _plain(value)
    return value if isinstance(value, str) else np.array(value, dtype=float)


def _plain(value):
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
