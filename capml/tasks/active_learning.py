"""``simulate.py task=active_learning``: rounds of MD with the committee, labeling where it
is uncertain, and member-wise fine-tuning, until its MD stays in its domain.

Round r (in ``<output_dir>/round_<r>/``), with committee C (``task.committee`` for the first):

1. ``md/``: Langevin MD with C of the replicas ``task=md`` would run (``task.compositions``,
   ``task.temperatures``, ``task.duration_ps``, starting structures by the selection block),
   each with a random stream seeded from (``seed``, replica, round) so rounds explore anew;
   a replica whose spread exceeds ``task.max_uncertainty`` stops ("left the training domain").
2. candidates: frames above ``task.select_threshold`` eV/A (plus the last frame of every
   replica that left the domain or blew up), thinned by farthest-point sampling to at most
   ``task.max_per_round`` (``capml.training.active_learning``) -> ``selected.h5``
   (method=active_learning, round=r, source = trajectory file and frame time).
3. ``selected.h5`` labeled in place with ``calculator`` (the reference) through
   ``capml.calculators.labeling.label_file``.
4. its labeled rows appended to ``task.data`` with split=train (they are where C was
   unsure); a file without a stored split first stores the one training drew, so the old
   rows keep theirs and every round's committee is scored on the same test structures.
5. ``train/``: C fine-tuned member-wise on the whole of ``task.data`` (``model.foundation=C``,
   ``capml.training.mace_finetune``) -> ``train/<model.name>/`` is the next committee.
6. ``round.json``: what was selected and why, their spreads, the reference errors of C and of
   the new committee on them (``capml.analysis.reference_check.reference_errors``), and how
   long each replica's MD survived and why it stopped.

The loop ends when a round's MD has no candidate (every replica ran ``task.duration_ps``
with no frame above the threshold), or after ``task.max_rounds``;
``rounds.csv`` sums the rounds up. Rounds are numbered on from the last active-learning round
stored in ``task.data``, so a run that continues an earlier run's committee and data keeps
round numbers, frame ids and MD seeds distinct from it. Resumable: the MD resumes its trajectories, a written
``selected.h5`` is not redrawn, labeling skips labeled rows, rows already in ``task.data``
(by id) are not appended again, finished members are not retrained, a round with its
``round.json`` is done; rerun the same command with ``hydra.run.dir=<same dir>``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from capml.analysis.reference_check import frames_as_set, reference_errors
from capml.calculators import locking
from capml.calculators.labeling import failure_summary, label_file
from capml.calculators.mlip import committee_members, labeler, mlip
from capml.calculators.reference import LabelingFailed
from capml.data import DataError, read, read_meta, write
from capml.data.splits import SplitSettings, labeled, resolve_split
from capml.data.store import append, update_rows
from capml.simulation import md
from capml.simulation.forces import EngineSettings, evaluator_factory
from capml.simulation.trajectory import read_trajectory
from capml.tasks.md import replicas_for, settings_of
from capml.training import active_learning as al
from capml.training import mace_finetune
from capml.utils.seeds import seed_of

log = logging.getLogger(__name__)

METHOD = mace_finetune.ACTIVE_LEARNING  # kept in every member's training set
SUMMARY_COLUMNS = ("round", "n_candidates", "n_selected", "n_labeled", "n_replicas",
                   "n_left_domain", "shortest_md_ps", "old_force_mae_meV_A",
                   "new_force_mae_meV_A", "old_mean_max_spread_eV_A",
                   "new_mean_max_spread_eV_A", "converged")


def run(cfg: DictConfig) -> list[dict]:
    t = cfg.task
    committee = check_settings(cfg)
    out = Path(t.output_dir)
    log.info("active learning: labels from %s appended to %s (task.data)",
             cfg.calculator.level, t.data)
    records, r0 = [], first_round(out, Path(str(t.data)))
    for r in range(r0, r0 + int(t.max_rounds)):
        records.append(run_round(cfg, r, committee, out / f"round_{r}"))
        write_summary(out / "rounds.csv", records)
        if records[-1]["converged"]:
            break
        committee = Path(records[-1]["committee_out"])
    log.info("active learning, %d round(s) (%s):\n%s", len(records),
             "converged" if records[-1]["converged"] else "stopped at task.max_rounds",
             (out / "rounds.csv").read_text())
    return records


def check_settings(cfg) -> Path:
    """The starting committee; clear errors for settings that cannot work."""
    t = cfg.task
    if t.get("max_uncertainty") is None:
        raise ValueError("task.max_uncertainty = null: active learning needs the committee "
                         "force spread (eV/A) at which MD stops a replica")
    threshold, limit = float(t.select_threshold), float(t.max_uncertainty)
    if not threshold > 0:
        raise ValueError(f"task.select_threshold = {t.select_threshold}: expected a committee "
                         "force spread > 0 eV/A")
    if not limit > threshold:
        raise ValueError(f"task.max_uncertainty = {t.max_uncertainty} eV/A must exceed "
                         f"task.select_threshold = {t.select_threshold} eV/A: MD does not store "
                         "the step that stops it, so frames to select lie between the two")
    if int(t.max_rounds) < 1 or int(t.max_per_round) < 1:
        raise ValueError(f"task.max_rounds = {t.max_rounds}, task.max_per_round = "
                         f"{t.max_per_round}: expected >= 1")
    committee = Path(str(t.committee))
    members = committee_members(committee)
    if members is None or len(members) < 2:
        raise FileNotFoundError(f"task.committee = {committee}: expected a committee folder "
                                "with committee.json listing >= 2 members (python train.py "
                                "-cn train_mace model.committee=K)")
    data = Path(str(t.data))
    if not data.is_file():
        raise FileNotFoundError(f"task.data = {data}: no such data file (the labeled set the "
                                "committee was trained on; the selected frames go there)")
    levels = set(labeled(read(data)).meta["level"])
    if str(cfg.calculator.level) not in levels:
        raise ValueError(f"task.data = {data} is labeled with {sorted(levels)}, but "
                         f"calculator '{cfg.calculator.level}' would label the new frames: "
                         "choose the calculator of the data's level")
    return committee


def first_round(out: Path, data_path: Path) -> int:
    """This run's first round: that of its earliest ``round_<r>`` folder when resuming, else
    one past the largest ``round`` among the rows of ``data_path`` (-1 for rows that active
    learning did not add)."""
    started = [int(p.name[len("round_"):]) for p in out.glob("round_*")
               if p.is_dir() and p.name[len("round_"):].isdigit()]
    if started:
        return min(started)
    try:
        rounds = read_meta(data_path, "round")
    except DataError:  # no row added by active learning yet
        rounds = []
    return max([0, *map(int, rounds)]) + 1


def run_round(cfg, r: int, committee: Path, rdir: Path) -> dict:
    """One round (module docstring); its ``round.json`` record."""
    done = rdir / "round.json"
    if done.exists():
        log.info("round %d: done earlier (%s)", r, done)
        return json.loads(done.read_text())
    t = cfg.task
    trajectories = md_step(cfg, r, committee, rdir / "md")
    cands = al.candidates(trajectories, float(t.select_threshold))
    record = {"round": r, "committee_in": str(committee),
              "replicas": al.replica_survival(trajectories), "n_candidates": len(cands),
              "select_threshold_eV_A": float(t.select_threshold),
              "max_uncertainty_eV_A": float(t.max_uncertainty), "converged": not cands}
    log.info("round %d: %d candidate frames above %g eV/A", r, len(cands),
             float(t.select_threshold))
    if cands:
        selected = select_step(cfg, r, committee, trajectories, cands, rdir / "selected.h5")
        new = learn_step(cfg, r, committee, selected, rdir)
        record.update(selection_record(selected), committee_out=str(new),
                      errors={"old": errors_on(selected, committee, t),
                              "new": errors_on(selected, new, t)})
    _write_json(done, record)
    return record


def md_step(cfg, r: int, committee: Path, md_dir: Path) -> list:
    """MD of every replica with ``committee`` (resumed where it stopped); the trajectories."""
    t = cfg.task
    replicas = [dataclasses.replace(rep, seed=seed_of(cfg.seed, f"{rep.name}-round{r}"))
                for rep in replicas_for(cfg)]
    settings = settings_of(t)  # task.max_uncertainty is the md task's key: replicas stop there
    potential = labeler(committee, device=str(t.device), dtype=str(t.dtype))
    outcomes = md.run(replicas, evaluator_factory(potential, EngineSettings.from_config(t)),
                      settings, md_dir, level=potential.level,
                      config=OmegaConf.to_yaml(cfg, resolve=True),
                      raise_on_blowup=bool(t.fail_on_blowup))
    for o in outcomes:
        log.info("round %d, %s: %s at step %d", r, o.name, o.status, o.last_step)
    return [read_trajectory(o.path) for o in outcomes]


def select_step(cfg, r: int, committee: Path, trajectories, cands, path: Path):
    """``path``: the thinned candidates, written once (atomically), then labeled in place;
    returns its rows (labels, spreads, why each was a candidate)."""
    t = cfg.task
    if not path.exists():
        frames = frames_as_set(trajectories, [(c.trajectory, c.frame) for c in cands])
        calc = mlip(committee, device=str(t.device), dtype=str(t.dtype))
        keep = sorted(al.thin(cands, al.committee_descriptors(frames.to_atoms(), calc),
                              int(t.max_per_round)))
        chosen = frames.subset(keep)
        n = len(keep)
        chosen.meta.update(id=np.array([f"r{r}-{i}" for i in chosen.meta["id"]], dtype=object),
                           method=np.array([METHOD] * n, dtype=object),
                           round=np.full(n, r, dtype=np.int64),
                           candidate=np.array([cands[k].why for k in keep], dtype=object))
        write(path, chosen, config=OmegaConf.to_yaml(cfg, resolve=True))
        log.info("round %d: %d of %d candidates selected -> %s", r, n, len(cands), path)
    label_file(path, path, OmegaConf.to_container(cfg.calculator, resolve=True),
               n_jobs=int(t.n_jobs), threads_per_job=t.get("threads_per_job"))
    selected = read(path)
    if not (selected.meta["label_status"] == "ok").any():
        raise LabelingFailed(f"{path}: every selected frame failed with "
                             f"'{cfg.calculator.level}': {failure_summary(path)}")
    return selected


def learn_step(cfg, r: int, committee: Path, selected, rdir: Path) -> Path:
    """Append the labeled selection to ``task.data`` (once) and fine-tune ``committee``
    member-wise on it; the new committee folder."""
    t = cfg.task
    append_once(Path(str(t.data)), labeled(selected), cfg)
    train_cfg = training_config(cfg, committee, rdir / "train")
    new = rdir / "train" / str(train_cfg.model.name)
    if not (new / "committee.json").is_file():
        log.info("round %d: fine-tuning %s member-wise on %s", r, committee, t.data)
        mace_finetune.run(train_cfg)
    return new


def append_once(data_path: Path, rows, cfg) -> None:
    """Rows not yet in ``data_path`` (by id) appended with split=train, after storing the
    split that training computed when the file holds none, so that the old rows keep their
    train/val/test membership once new rows are in."""
    have = set(read_meta(data_path, "id").astype(str))
    new = rows.subset(np.flatnonzero([str(i) not in have for i in rows.meta["id"]]))
    if not len(new):
        return
    with locking.exclusive(data_path):
        store_training_split(data_path, cfg.data.split)
        new.meta["split"] = np.array(["train"] * len(new), dtype=object)
        append(data_path, new)
    log.info("appended %d labeled frames to %s", len(new), data_path)


def store_training_split(data_path: Path, split_cfg) -> None:
    """``meta/split`` of the labeled rows as ``capml.data.splits.resolve_split`` draws it
    for training (``data.split``; train_size aside), when the file does not store one."""
    data = read(data_path)
    train = labeled(data)
    settings = dataclasses.replace(SplitSettings.from_config(split_cfg), train_size=None)
    split, source = resolve_split(train, settings, data_path)
    if source == "stored":
        return
    rows = np.flatnonzero(np.isin(data.meta["id"].astype(str), train.meta["id"].astype(str)))
    update_rows(data_path, rows, meta={"split": list(split)})


def training_config(cfg, committee: Path, out: Path) -> DictConfig:
    """train.py -cn train_mace's config for member-wise fine-tuning of ``committee``."""
    model = OmegaConf.create(OmegaConf.to_container(cfg.model, resolve=True))
    model.foundation = str(committee.resolve())
    model.committee = len(committee_members(committee))
    model.export_dir = None
    data = OmegaConf.to_container(cfg.data, resolve=True) | {"low_level": str(cfg.task.data)}
    out.mkdir(parents=True, exist_ok=True)
    return OmegaConf.create({"seed": int(cfg.seed), "model": model, "data": data,
                             "paths": {"output_dir": str(out),
                                       "root_dir": str(cfg.paths.root_dir)}, "logger": None})


def errors_on(selected, committee: Path, t) -> dict:
    """Reference errors of ``committee`` on the labeled selected frames."""
    summary, rows, _ = reference_errors(labeled(selected),
                                        mlip(committee, device=str(t.device), dtype=str(t.dtype)))
    return {"summary": summary, "frames": rows,
            "mean_max_spread_eV_A": float(np.mean([r["max_force_spread_eV_A"] for r in rows]))}


def selection_record(selected) -> dict:
    ok = selected.meta["label_status"] == "ok"
    return {"n_selected": len(selected), "n_labeled": int(ok.sum()),
            "selected": [{"id": str(i), "source": str(s), "md_max_force_spread_eV_A": float(v),
                          "candidate": str(c), "label_status": str(st),
                          "label_seconds": float(sec)} for i, s, v, c, st, sec in zip(
                              selected.meta["id"], selected.meta["source"],
                              selected.meta["md_max_force_spread"], selected.meta["candidate"],
                              selected.meta["label_status"], selected.meta["label_seconds"])]}


def summary_row(rec: dict) -> dict:
    errors = rec.get("errors", {})

    def err(which, key):
        e = errors.get(which)
        if e is None:
            return float("nan")
        return (e["summary"]["parity"]["forces"]["mae"] if key == "mae"
                else e["mean_max_spread_eV_A"])

    reps = rec["replicas"]
    return {"round": rec["round"], "n_candidates": rec["n_candidates"],
            "n_selected": rec.get("n_selected", 0), "n_labeled": rec.get("n_labeled", 0),
            "n_replicas": len(reps),
            "n_left_domain": sum(x["status"].startswith("left the training domain")
                                 for x in reps),
            "shortest_md_ps": min(x["survived_ps"] for x in reps),
            "old_force_mae_meV_A": err("old", "mae"), "new_force_mae_meV_A": err("new", "mae"),
            "old_mean_max_spread_eV_A": err("old", "spread"),
            "new_mean_max_spread_eV_A": err("new", "spread"), "converged": rec["converged"]}


def write_summary(path: Path, records: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=SUMMARY_COLUMNS)
        writer.writeheader()
        for rec in records:
            writer.writerow({k: (f"{v:.4g}" if isinstance(v, float) else v)
                             for k, v in summary_row(rec).items()})
    os.replace(tmp, path)


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)
