"""``analyze.py task=mlip_parity``: interatomic potentials against their reference level.

For every model in ``task.models`` (a .model file or a mace_mp name): energies per atom,
force and stress components on the held-out labeled structures of ``task.data`` (the
paper's Fig. 4), and the harmonic phonon dispersion of each structure in
``task.phonons.structures`` against reference force constants on the same q-path,
compared frequency by frequency (Fig. 5). A reference given as a phonopy yaml fixes the
structure, supercell and primitive cell; without one, the parent cell of ``x`` is
computed with ``task.reference_calculator`` (GFN2-xTB: about 6 displaced 40-atom cells,
a few minutes).

With ``task.md`` set (a task=md config), every model also runs the same seeded Langevin
replicas, and the time each survives before it blows up or leaves its committee's domain is
reported (``md_survival.csv``): a potential can fit held-out cells well and still fall into
an unphysical hole that MD finds.

Held-out: with ``held_out: unseen`` the structures used for training or validation by any
model (ids listed in the ``<model>.yaml`` written next to it by ``train.py model=mace``;
for a committee folder, every id outside its shared test split) are left out; models without
that file (foundation models) never saw these data.
"""

from __future__ import annotations

import copy
import csv
import json
import logging
from functools import partial
from pathlib import Path

import numpy as np
import yaml
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from capml.analysis import mlip_parity as parity_analysis
from capml.calculators.mlip import committee_manifest, mlip
from capml.data import read
from capml.data.splits import labeled
from capml.models.mace import looks_like_path
from capml.simulation.forces import evaluator_factory, make_evaluator
from capml.simulation.phonons import force_constants
from capml.simulation.phonopy_io import (
    load_phonopy,
    save_phonopy,
    to_ase_atoms,
)
from capml.structures import System

log = logging.getLogger(__name__)


def seen_ids(models: dict, ids) -> set[str]:
    """The ids among ``ids`` that a model was trained or validated on: a model file lists
    them in the ``<stem>.yaml`` beside it (written by ``train.py model=mace``); a committee's
    members train on redraws of one pool and share a test split, so for a committee folder
    every id outside its ``committee.json`` ``test_ids`` counts as seen."""
    seen = set()
    for model in models.values():
        if not looks_like_path(model):
            continue
        committee = committee_manifest(model)
        if committee is not None:
            seen |= set(ids) - {str(i) for i in committee[1].get("test_ids", [])}
            continue
        sidecar = Path(str(model)).with_suffix(".yaml")
        if sidecar.is_file():
            recorded = (yaml.safe_load(sidecar.read_text()) or {}).get("ids") or {}
            seen |= set(recorded.get("train", [])) | set(recorded.get("val", []))
    return seen


def held_out_set(path, models: dict, mode: str, max_structures, seed: int):
    data = labeled(read(path))
    if mode == "unseen":
        seen = seen_ids(models, [str(i) for i in data.meta["id"]])
        data = data.subset(np.flatnonzero([i not in seen for i in data.meta["id"]]))
    elif mode != "all":
        raise ValueError(f"task.held_out={mode!r}: expected 'unseen' or 'all'")
    if len(data) == 0:
        raise ValueError(f"{path}: no labeled structures left to evaluate (held_out={mode})")
    if max_structures is not None and len(data) > int(max_structures):
        pick = np.sort(np.random.default_rng(seed).choice(len(data), int(max_structures),
                                                          replace=False))
        data = data.subset(pick)
    return data


def reference_phonons(spec, system: System, calculator_cfg, distance: float, out: Path):
    """Reference phonopy object of one structure: loaded, or computed and saved."""
    if spec.get("reference"):
        return load_phonopy(spec.reference)
    labeler = instantiate(calculator_cfg)
    log.info("phonons %s: reference force constants with %s", spec.name, labeler.level)
    ph = force_constants(system.parent(float(spec.x)), evaluator_factory(labeler),
                         supercell_matrix=system.supercell, distance=distance)
    save_phonopy(ph, out / f"phonons_{spec.name}_reference.yaml")
    return ph


def run(cfg: DictConfig) -> dict:
    t = cfg.task
    out = Path(t.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    models = dict(t.models or {})
    if not models:
        raise ValueError("task.models is empty: give {name: .model path or mace_mp name}")
    calcs = {name: mlip(m, device=t.device, dtype=t.dtype) for name, m in models.items()}

    data = held_out_set(t.data, models, t.held_out, t.max_structures, int(cfg.seed))
    log.info("parity on %d held-out structures of %s", len(data), t.data)
    ref = parity_analysis.reference_values(data)
    atoms = data.to_atoms()
    preds = {name: parity_analysis.predict(calc, atoms) for name, calc in calcs.items()}
    parity = {name: parity_analysis.parity_metrics(ref, p) for name, p in preds.items()}
    parity_analysis.parity_figure(ref, preds, parity).savefig(out / "parity.png", dpi=150)

    phonons = {}
    system = System.from_config(cfg.system)
    for spec in t.phonons.structures:
        ref_ph = reference_phonons(spec, system, t.reference_calculator,
                                   float(t.phonons.distance), out)
        path = parity_analysis.band_path(ref_ph, int(t.phonons.npoints))
        ref_band = parity_analysis.band_frequencies(ref_ph, path)
        unitcell = to_ase_atoms(ref_ph.unitcell)
        bands, phonons[spec.name] = {}, {}
        for name, calc in calcs.items():
            ph = force_constants(unitcell, partial(make_evaluator, build=lambda c=calc: c,
                                                   dtype=str(t.dtype)),
                                 supercell_matrix=ref_ph.supercell_matrix,
                                 primitive_matrix=ref_ph.primitive_matrix,
                                 distance=float(t.phonons.distance))
            save_phonopy(ph, out / f"phonons_{spec.name}_{name}.yaml")
            bands[name] = parity_analysis.band_frequencies(ph, path)
            phonons[spec.name][name] = parity_analysis.frequency_metrics(ref_band["frequencies"],
                                                            bands[name]["frequencies"])
            log.info("phonons %s, %s: MAE %.3f THz over %d frequencies", spec.name, name,
                     phonons[spec.name][name]["mae"], phonons[spec.name][name]["n"])
        parity_analysis.phonon_figure(spec.name, ref_band, bands, phonons[spec.name]).savefig(
            out / f"phonons_{spec.name}.png", dpi=150)

    survival = md_survival(cfg, models, out) if t.get("md") else {}
    result = {"data": str(t.data), "n_structures": len(data),
              "ids": [str(i) for i in data.meta["id"]], "models": {k: str(v) for k, v in
                                                                   models.items()},
              "parity": parity, "phonons": phonons, "md_survival": survival}
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    _write_csv(out / "parity_metrics.csv",
               [{"model": n, "quantity": q, **m} for n, per in parity.items()
                for q, m in per.items()])
    _write_csv(out / "phonon_metrics.csv",
               [{"structure": s, "model": n, "mae_thz": m["mae"], "rmse_thz": m["rmse"],
                 "max_thz": m["max"], "r2": m["r2"], "n": m["n"],
                 "n_imaginary_reference": m["n_imaginary_reference"],
                 "n_imaginary_predicted": m["n_imaginary_predicted"]}
                for s, per in phonons.items() for n, m in per.items()])
    _write_csv(out / "md_survival.csv", [row for rows in survival.values() for row in rows])
    return result


def md_survival(cfg: DictConfig, models: dict, out: Path) -> dict[str, list[dict]]:
    """How long each model's Langevin MD runs before it blows up (atoms in contact, runaway
    temperature) or leaves its committee's domain: ``task.md`` is a task=md config (its
    compositions, temperatures, duration, checks), run with every model in
    ``out/md_<model>/`` (resumable). Rows per replica: status, survived time (ps) and the
    largest committee force spread along the way (NaN for a single potential)."""
    from capml.simulation.trajectory import largest_spread, read_trajectory
    from capml.tasks import md as md_task

    survival = {}
    for name, model in models.items():
        sub = copy.deepcopy(cfg)
        with open_dict(sub):
            sub.task = copy.deepcopy(cfg.task.md)
            sub.task.output_dir = str(out / f"md_{name}")
            sub.task.fail_on_blowup = False
            sub.calculator = {"_target_": "capml.calculators.mlip.labeler", "model": str(model),
                              "device": cfg.task.device, "dtype": cfg.task.dtype,
                              "level": f"mace-{name}"}
        dt_ps = float(sub.task.timestep_fs) / 1000.0
        survival[name] = [
            {"model": name, "replica": o.name, "status": o.status,
             "survived_ps": round(o.last_step * dt_ps, 4),
             "duration_ps": float(sub.task.duration_ps),
             "max_force_spread_eV_A": largest_spread(read_trajectory(o.path))}
            for o in md_task.run(sub)]
        log.info("md %s: %s", name, ", ".join(f"{r['replica']} {r['survived_ps']:g} ps "
                                             f"({r['status']})" for r in survival[name]))
    return survival


def _write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    fields = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
