"""``simulate.py task=relax task.input=FILE``: relax structures from any structure file
(every format ase reads) or from a capml HDF5 data set (rows chosen with
``task.select`` metadata criteria and/or ``task.index``).

Writes ``relaxed.h5`` (energy, forces, stress; meta method=relaxed, converged,
n_steps, max_force, source, and with a committee potential ``max_force_spread`` (eV/A) and
``energy_spread`` (eV) of the relaxed structure, NaN otherwise), ``relaxed.extxyz`` and
``relax.csv``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from capml import data as store
from capml.calculators.mlip import spread_of
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
    spreads = _spreads(results, labeler)
    data = relaxed_set(results, atoms, labeler.level, extra=spreads)
    path = store.write(out_dir / "relaxed.h5", data, config=OmegaConf.to_yaml(cfg, resolve=True))
    from ase.io import write

    write(out_dir / "relaxed.extxyz", [r.atoms for r in results])
    _table(results, atoms, spreads).to_csv(out_dir / "relax.csv", index=False)
    return path


def _spreads(results, labeler) -> dict[str, list[float]]:
    """Committee spread columns of the relaxed structures (NaN without a committee)."""
    calculator = labeler.calculator()
    rows = [spread_of(r.atoms, calculator) for r in results]
    return {key: [row[key] for row in rows] for key in ("max_force_spread", "energy_spread")}


def _table(results, atoms, spreads):
    import pandas as pd

    return pd.DataFrame([{"id": structure_id(a, k), "energy_eV": r.energy,
                          "max_force_eV_A": r.max_force, "converged": r.converged,
                          "n_steps": r.n_steps, "n_atoms": len(a),
                          "max_force_spread_eV_A": spreads["max_force_spread"][k],
                          "energy_spread_eV": spreads["energy_spread"][k], "note": r.note}
                         for k, (r, a) in enumerate(zip(results, atoms))])
