"""``simulate.py task=force_constants``: harmonic force constants of the end members.

Finite displacements (phonopy) on the parent cell of x = 0 and x = 1 at their
own lattice in the system's supercell, forces from the configured calculator
through the force engine (``engine`` block; MACE: displaced cells batched);
written as phonopy yaml, the input of thermal displacement sampling
(``system.force_constants``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig

from capml.simulation.forces import EngineSettings, evaluator_factory
from capml.simulation.phonons import force_constants
from capml.simulation.phonopy_io import save_phonopy
from capml.structures import System

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> list[Path]:
    system = System.from_config(cfg.system)
    labeler = instantiate(cfg.calculator)
    evaluator = evaluator_factory(labeler, EngineSettings.from_config(cfg.task))
    out_dir = Path(cfg.task.output_dir)
    paths = []
    for x in (0.0, 1.0):
        ph = force_constants(system.parent(x), evaluator, supercell_matrix=system.supercell,
                             primitive_matrix="auto", distance=float(cfg.task.distance))
        path = save_phonopy(ph, out_dir / f"{cfg.task.prefix}_x{int(x)}.yaml")
        log.info("end member x = %d: %d displacements with %s -> %s", x,
                 len(ph.supercells_with_displacements), labeler.level, path)
        paths.append(path)
    return paths
