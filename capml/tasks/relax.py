"""``simulate.py task=relax task.input=FILE``: relax structures from any structure file
(every format ase reads) or from a capml HDF5 data set (rows chosen with
``task.select`` metadata criteria and/or ``task.index``).

Writes ``relaxed.h5`` (energy, forces, stress; meta method=relaxed, converged,
n_steps, max_force, source), ``relaxed.extxyz`` and ``relax.csv``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from capml import data as store
from capml.simulation.relax import RelaxSettings, describe, relax_or_record, relaxed_set
from capml.structures.selection import load_structures, structure_id

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> Path:
    t = cfg.task
    atoms = load_structures(t.input, t.get("select"), t.get("index"))
    labeler = instantiate(cfg.calculator)
    settings = RelaxSettings.from_config(t)
    results = []
    for k, a in enumerate(atoms):
        res = relax_or_record(a, labeler, settings, seed=int(cfg.seed) + k)
        log.info("[%d/%d] %s: %s", k + 1, len(atoms), structure_id(a, k), describe(res))
        results.append(res)
    out_dir = Path(t.output_dir)
    data = relaxed_set(results, atoms, labeler.level)
    path = store.write(out_dir / "relaxed.h5", data, config=OmegaConf.to_yaml(cfg, resolve=True))
    from ase.io import write

    write(out_dir / "relaxed.extxyz", [r.atoms for r in results])
    _table(results, atoms).to_csv(out_dir / "relax.csv", index=False)
    return path


def _table(results, atoms):
    import pandas as pd

    return pd.DataFrame([{"id": structure_id(a, k), "energy_eV": r.energy,
                          "max_force_eV_A": r.max_force, "converged": r.converged,
                          "n_steps": r.n_steps, "n_atoms": len(a), "note": r.note}
                         for k, (r, a) in enumerate(zip(results, atoms))])
