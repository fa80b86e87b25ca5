"""``simulate.py task=force_constants``: harmonic force constants of the end members.

Finite displacements (phonopy) on the parent cell of x = 0 and x = 1 at their
own lattice in the system's supercell, forces from the configured calculator
through the force engine (``engine`` block; MACE: displaced cells batched);
written as phonopy yaml, the input of thermal displacement sampling
(``system.force_constants``), with each end member's phonon bands, DOS and stability
verdict beside it (``<prefix>_x<0|1>.png``, ``<prefix>_stability.csv``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
from hydra.utils import instantiate
from omegaconf import DictConfig

from capml.simulation.forces import EngineSettings, evaluator_factory
from capml.simulation.phonons import analyse, force_constants, plot, stability_row
from capml.simulation.phonopy_io import save_phonopy, to_ase_atoms
from capml.structures import System

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> list[Path]:
    system = System.from_config(cfg.system)
    labeler = instantiate(cfg.calculator)
    evaluator = evaluator_factory(labeler, EngineSettings.from_config(cfg.task))
    out_dir = Path(cfg.task.output_dir)
    paths, rows = [], []
    for x in (0.0, 1.0):
        ph = force_constants(system.parent(x), evaluator, supercell_matrix=system.supercell,
                             primitive_matrix="auto", distance=float(cfg.task.distance))
        path = save_phonopy(ph, out_dir / f"{cfg.task.prefix}_x{int(x)}.yaml")
        log.info("end member x = %d: %d displacements with %s -> %s", x,
                 len(ph.supercells_with_displacements), labeler.level, path)
        paths.append(path)
        rows.append({"x": x, **report(ph, path.with_suffix(".png"), labeler.level)})
    pd.DataFrame(rows).to_csv(out_dir / f"{cfg.task.prefix}_stability.csv", index=False)
    return paths


def report(phonon, figure, level: str) -> dict:
    """Bands, DOS and stability verdict of one end member's force constants."""
    result = analyse(phonon)
    formula = to_ase_atoms(phonon.unitcell).get_chemical_formula()
    plot(result, figure, title=f"{level}: {formula}")
    log.info("%s: %s", figure, result["stability"].summary())
    return stability_row(result["stability"])
