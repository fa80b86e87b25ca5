"""``simulate.py task=phonons``: harmonic phonons and a stability verdict.

Structures: the ``task.selection`` block (capml.structures.selection): ``task.input``
(a capml HDF5 file such as enumerate's ``ground_states.h5``, filtered by
``task.select`` and ``task.compositions``, or any ase-readable file), or, with
``input: null``, one seeded random ordering of the system at each composition.
Structures not marked relaxed are relaxed first (``relax: auto``, the ``relax``
block's settings). Force constants by finite displacements with the configured
calculator (MACE: displaced cells batched, float64).

Outputs per structure in ``task.output_dir/<id>/``: ``phonopy.yaml`` (force
constants, phonopy's format), ``band.yaml`` and ``total_dos.dat`` (phonopy's),
``band_dos.png``; for all structures ``stability.csv`` (verdict, lowest
frequency, its q-point, band and element character; with a committee potential the
``max_force_spread`` (eV/A) and ``energy_spread`` (eV) of the structure the phonons are of). A structure whose
relaxation fails in every calculator settings variant gets a row with
``stable`` empty and the failure as its verdict; the others go on.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig

from capml.calculators.mlip import spread_of
from capml.simulation import phonons
from capml.simulation.forces import EngineSettings, evaluator_factory
from capml.simulation.phonopy_io import save_phonopy
from capml.simulation.relax import RelaxSettings, describe, failed, relax_or_record
from capml.structures import System
from capml.structures.selection import Selection, structure_id, structures_for
from capml.utils.config import plain

log = logging.getLogger(__name__)

RELAX_MODES = ("auto", True, False)


def run(cfg: DictConfig) -> Path:
    t = cfg.task
    if t.relax not in RELAX_MODES:
        raise ValueError(f"task.relax = {t.relax!r}: expected one of {RELAX_MODES}")
    atoms_list = structures_for(System.from_config(cfg.system), Selection.from_config(t),
                                int(cfg.seed))
    labeler = instantiate(cfg.calculator)
    settings = RelaxSettings.from_config(t)
    evaluator = evaluator_factory(labeler, EngineSettings.from_config(t))
    out_dir = Path(t.output_dir)
    calculator = labeler.calculator()  # for the committee spread of each final structure
    rows = []
    for k, atoms in enumerate(atoms_list):
        name = structure_id(atoms, k)
        row = {"id": name, "x": atoms.info.get("x", np.nan), "n_atoms": len(atoms)}
        if t.relax is True or (t.relax == "auto" and atoms.info.get("method") != "relaxed"):
            res = relax_or_record(atoms, labeler, settings)
            log.info("%s: relaxed first: %s", name, describe(res))
            if failed(res):
                log.error("%s: no phonons (relaxation failed)", name)
                rows.append({**row, "level": labeler.level, "verdict": res.note})
                continue
            atoms = res.atoms
        rows.append({**row, **spread_of(atoms, calculator),
                     **_phonons_of(atoms, evaluator, t, out_dir / name, labeler.level)})
    import pandas as pd

    table = pd.DataFrame(rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_dir / "stability.csv", index=False)
    log.info("stability (tolerance %g THz):\n%s", float(t.tolerance),
             table.reindex(columns=["id", "x", "stable", "min_frequency", "q_point",
                                    "n_imaginary"]).to_string(index=False))
    return out_dir / "stability.csv"


def _phonons_of(atoms, evaluator, t, sub: Path, level: str) -> dict:
    """Force constants, bands, DOS and verdict of one structure, written to ``sub``;
    returns its stability.csv columns."""
    ph = phonons.force_constants(atoms, evaluator, supercell_matrix=list(t.supercell_matrix),
                                 primitive_matrix=_primitive(t.primitive_matrix),
                                 distance=float(t.distance), symprec=float(t.symprec))
    result = phonons.analyse(ph, mesh=plain(t.mesh), npoints=int(t.npoints),
                             tolerance=float(t.tolerance))
    save_phonopy(ph, sub / "phonopy.yaml")
    if result["bands"] is not None:
        ph.write_yaml_band_structure(filename=str(sub / "band.yaml"))
    ph.write_total_dos(filename=str(sub / "total_dos.dat"))
    figure = phonons.plot(result, sub / "band_dos.png", title=f"{sub.name} ({level})")
    verdict = result["stability"]
    log.info("%s: %s", sub.name, verdict.summary())
    return {"n_displacements": len(ph.supercells_with_displacements), "level": level,
            **phonons.stability_row(verdict), "force_constants": str(sub / "phonopy.yaml"),
            "figure": str(figure)}


def _primitive(value):
    value = plain(value)
    return value if isinstance(value, str) else np.array(value, dtype=float)
