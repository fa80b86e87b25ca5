"""``python train.py -cn train_mace``: a MACE potential from the low-level data, through
mace-torch's own trainer (``mace.cli.run_train``, run in a subprocess because it sets torch's
global dtype).

Steps: labeled rows of ``cfg.data.low_level`` (label_status ok, finite energy, forces,
stress) -> a train/valid/test split (``data.split``, ``capml.data.splits.resolve_split``:
the file's stored split, else seeded and stratified by composition and method) -> extxyz
with mace's REF_ keys -> E0s -> ``mace_run_train`` from a foundation model
(``model.foundation``: mace_mp name or local file) or from scratch
(``model.foundation=null``) -> checks that what ran is what was asked (multihead replay
on/off, loss and stress weight, foundation) -> held-out metrics of the starting and the
trained model -> ``<name>.model``, ``<name>.yaml`` (what was trained, on what, how long)
and ``<name>_metrics.json`` in the run directory, copied to ``model.export_dir`` when set
(the bundled demo potential is made that way).

A committee (``model.committee=K``): K such runs in ``member_<k>/`` with seeds ``seed + k``,
gathered as ``<name>/member_<k>.model`` plus ``<name>/committee.json`` (what
``calculator=mlip`` loads as one committee calculator). All members are scored on the one
test split; member 0 uses the split itself and member k > 0 a seeded redraw of the train/val
pool of the same sizes, so that members differ in data as well as in initial weights (their
disagreement then grows where the data are sparse) while no member's early stopping sees the
test structures.

Member-wise fine-tuning (``model.foundation=<committee folder>``, e.g. the committee that
active learning refines, ``capml.tasks.active_learning``): member k starts from the old
member k, so every member keeps its own initial weights and data draw and the committee stays
a committee (fine-tuning all members from one model would collapse their spread);
``model.committee`` must equal the old committee's size. A killed committee run resumes in
its run directory: a member whose ``<name>_metrics.json`` exists (written last) is not
trained again, provided its recorded ``model`` config equals this run's.

E0s (``model.e0s``, isolated atoms from scratch, estimated with a foundation):
``capml.training.mace_e0s``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import filecmp
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml
from ase.data import chemical_symbols
from omegaconf import DictConfig, OmegaConf, open_dict

from capml.data import StructureSet, read, read_attrs
from capml.data.interchange import write_extxyz
from capml.data.splits import SPLITS, SplitSettings, labeled, resolve_split
from capml.data.structure_set import concat
from capml.training import mace_e0s
from capml.utils.torch_compat import import_mace

log = logging.getLogger(__name__)

STRESS_LOSSES = {"stress": "WeightedEnergyForcesStressLoss",
                 "huber": "WeightedHuberEnergyForcesStressLoss", "universal": "UniversalLoss"}
# mace replays Materials Project data for these names without --pt_train_file (run_train.py)
MP_REPLAY_NAMES = ("small", "medium", "large")
_META_TO_XYZ = ("id", "x", "method", "temperature", "amplitude")
_MULTIHEAD_LINE = "Using multiheads finetuning mode"
ACTIVE_LEARNING = "active_learning"  # the method of structures active learning adds


# ------------------------------------------------------------------------ data
def split_data(data: StructureSet, settings: SplitSettings, path="data"
               ) -> dict[str, StructureSet]:
    """Train/val/test parts by ``capml.data.splits.resolve_split`` (the ``data.split``
    policy the GNN uses too); the test part may be empty, train and val may not."""
    split, source = resolve_split(data, settings, path)
    parts = {name: data.subset(np.flatnonzero(split == name)) for name in SPLITS}
    for name in ("train", "val"):
        if len(parts[name]) == 0:
            raise ValueError(f"{path}: the {source} '{name}' split is empty ({len(data)} "
                             f"labeled structures, data.split.fractions="
                             f"{list(settings.fractions)}): label more structures or change "
                             "the fractions")
    return parts


def for_mace(data: StructureSet) -> StructureSet:
    """Copy with only the simple metadata columns (free-text notes stay out of the extxyz)."""
    return dataclasses.replace(data, meta={k: v for k, v in data.meta.items()
                                           if k in _META_TO_XYZ})


# -------------------------------------------------------------- trainer command
def check_request(mcfg) -> None:
    """Fail before training on settings mace would silently ignore or change."""
    loss = str(mcfg.mace.loss)
    if float(mcfg.mace.get("stress_weight", 0.0)) > 0 and loss not in STRESS_LOSSES:
        raise ValueError(f"model.mace.stress_weight={mcfg.mace.stress_weight} has no effect "
                         f"with model.mace.loss={loss}: use one of {sorted(STRESS_LOSSES)}")
    if mcfg.multihead_finetuning:
        if mcfg.foundation is None:
            raise ValueError("model.multihead_finetuning=true needs model.foundation")
        if mcfg.pt_train_file is None and str(mcfg.foundation) not in MP_REPLAY_NAMES:
            raise ValueError(
                f"model.multihead_finetuning=true with foundation '{mcfg.foundation}' needs "
                "model.pt_train_file (replay data): mace switches replay off silently "
                f"without it for any foundation but {MP_REPLAY_NAMES} (mace issue #1443)")


def trainer_args(options: dict) -> list[str]:
    """mace_run_train command-line arguments from {option: value}; unknown options and
    flags the command line cannot express raise ValueError."""
    tools = import_mace("mace.tools")
    actions = {a.option_strings[0][2:]: a for a in tools.build_default_arg_parser()._actions
               if a.option_strings}
    unknown = sorted(set(options) - set(actions))
    if unknown:
        raise ValueError(f"model.mace: unknown mace_run_train options {unknown}")
    argv = []
    for key, value in options.items():
        action = actions[key]
        if value is None:
            continue
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            wanted = isinstance(action, argparse._StoreTrueAction)
            if bool(value) == wanted:
                argv.append(f"--{key}")
            elif bool(value) != bool(action.default):
                raise ValueError(f"model.mace.{key}={value}: mace_run_train cannot set this")
            continue
        if isinstance(value, (list, tuple, dict)):
            value = repr(value)
        argv.append(f"--{key}={value}")
    return argv


def wandb_options(logger_cfg, out_dir: Path) -> tuple[dict, dict]:
    """mace's W&B options and environment from the run's ``logger`` config (a W&B logger
    entry with project/entity/name/save_dir/offline; runs go to ``save_dir`` or the run
    directory), or nothing."""
    if not logger_cfg:
        return {}, {}
    entries = [logger_cfg] + [v for v in logger_cfg.values() if isinstance(v, DictConfig)]
    for entry in entries:
        if "wandb" in str(entry.get("_target_", "")).lower():
            opts = {"wandb": True, "wandb_project": entry.get("project") or "capml",
                    "wandb_entity": entry.get("entity"), "wandb_name": entry.get("name"),
                    "wandb_dir": str(Path(entry.get("save_dir") or out_dir).resolve())}
            return opts, ({"WANDB_MODE": "offline"} if entry.get("offline") else {})
    return {}, {}


def run_trainer(argv: list[str], log_path: Path, env: dict | None = None) -> float:
    """Run ``python -m mace.cli.run_train`` (output to ``log_path``); wall seconds."""
    cmd = [sys.executable, "-m", "mace.cli.run_train", *argv]
    t0 = time.perf_counter()
    with open(log_path, "w") as fh:
        fh.write(" ".join(cmd) + "\n")
        fh.flush()
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT,
                              env={**os.environ, **(env or {})})
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = "\n".join(log_path.read_text().splitlines()[-25:])
        raise RuntimeError(f"mace_run_train failed (exit {proc.returncode}); log {log_path}:\n"
                           f"{tail}")
    return seconds


def verify_run(log_text: str, heads: list[str], mcfg) -> dict:
    """What the trainer actually did, read from its log and the saved model; raises
    RuntimeError where it differs from the request."""
    multihead = _MULTIHEAD_LINE in log_text or "pt_head" in heads
    if multihead != bool(mcfg.multihead_finetuning):
        raise RuntimeError(f"asked for multihead_finetuning={mcfg.multihead_finetuning} but "
                           f"mace ran with multihead={multihead} (heads {heads})")
    m = re.search(r"(\w+Loss)\(energy_weight=([\d.]+), forces_weight=([\d.]+)"
                  r"(?:, stress_weight=([\d.]+))?\)", log_text)
    if m is None:
        raise RuntimeError("the trainer log does not name its loss function")
    loss_cls, stress_w = m.group(1), float(m.group(4)) if m.group(4) else 0.0
    want = float(mcfg.mace.get("stress_weight", 0.0))
    if str(mcfg.mace.loss) in STRESS_LOSSES and (
            loss_cls != STRESS_LOSSES[str(mcfg.mace.loss)] or abs(stress_w - want) > 1e-6):
        raise RuntimeError(f"asked for loss={mcfg.mace.loss} with stress_weight={want}, "
                           f"mace ran {m.group(0)}")
    if mcfg.foundation is not None and "as initial checkpoint" not in log_text:
        raise RuntimeError(f"asked to start from {mcfg.foundation} but the trainer log does "
                           "not report loading a foundation model")
    e0 = re.search(r"Atomic Energies used \(z: eV\) for head Default: \{([^}]*)\}", log_text)
    e0s = ({int(z): float(v) for z, v in (p.split(":") for p in e0.group(1).split(","))}
           if e0 else None)
    return {"multihead_finetuning": multihead, "heads": heads, "loss": m.group(0),
            "e0s": e0s}


# ---------------------------------------------------------------- evaluation
def evaluate(model, data: StructureSet, device: str, dtype: str) -> tuple[dict, dict]:
    """Parity metrics (meV/atom, meV/A, meV/A^3) of ``model`` on ``data`` and its
    predictions (``mlip_parity.predict`` arrays)."""
    from capml.analysis.mlip_parity import parity_metrics, predict, reference_values
    from capml.calculators.mlip import mlip

    pred = predict(mlip(model, device=device, dtype=dtype), data.to_atoms())
    return parity_metrics(reference_values(data), pred), pred


# ------------------------------------------------------------------------ run
def run(cfg: DictConfig) -> float:
    """Train (or fine-tune) a MACE potential, or a committee of ``model.committee`` of them;
    returns the validation force MAE (meV/A; a committee: the mean over its members)."""
    mcfg = cfg.model
    check_request(mcfg)
    size = int(mcfg.get("committee", 1))
    if size < 1:
        raise ValueError(f"model.committee = {mcfg.committee}: expected a number of members "
                         ">= 1 (1: a single potential)")
    out = Path(cfg.paths.output_dir)
    foundations = member_foundations(mcfg.foundation, size)
    source, data, parts = _training_data(cfg)
    if size == 1:
        return _train_member(cfg, out, source, data, parts, foundations[0])
    return _train_committee(cfg, out, source, data, parts, foundations, size)


def member_foundations(foundation, size: int) -> list[str | None]:
    """The foundation of each of ``size`` members: one model for all, or member k of a
    committee folder for member k (member-wise fine-tuning, sizes must match)."""
    from capml.calculators.mlip import committee_members

    members = None if foundation is None else committee_members(foundation)
    if members is None:
        return [resolve_foundation(foundation)] * size
    if len(members) != size:
        raise ValueError(f"model.foundation={foundation} is a committee of {len(members)} "
                         f"members; member-wise fine-tuning needs model.committee="
                         f"{len(members)} (got {size})")
    return [str(m.resolve()) for m in members]


def redraw_train_val(parts: dict[str, StructureSet], seed: int) -> dict[str, StructureSet]:
    """The train and val structures pooled and split again (same sizes, seeded); the test
    part is kept, so every committee member is scored on structures none of them saw.
    Structures that active learning added (method ``active_learning``) stay in every
    member's training set: they were labeled because the committee disagreed there, and a
    member that only validates on them keeps disagreeing (the demo's first PBEsol round:
    two members with 3 of the 6 new frames in validation raised the spread on them)."""
    train_method = np.asarray(parts["train"].meta.get("method", [""] * len(parts["train"])))
    learned = train_method == ACTIVE_LEARNING
    kept = parts["train"].subset(np.flatnonzero(learned))
    pool = concat([parts["train"].subset(np.flatnonzero(~learned)), parts["val"]])
    order = np.random.default_rng(seed).permutation(len(pool))
    n_val = len(parts["val"])
    train = pool.subset(np.sort(order[n_val:]))
    return {"train": concat([train, kept]) if len(kept) else train,
            "val": pool.subset(np.sort(order[:n_val])), "test": parts["test"]}


def _train_committee(cfg, out: Path, source, data, parts, foundations, size: int) -> float:
    """K members (seeds seed, seed+1, ...; member k > 0 on its own train/val redraw; member k
    from ``foundations[k]``) in ``out/member_<k>/``, gathered in ``out/<name>/``
    (member_<k>.model + committee.json, written last and atomically)."""
    folder = out / cfg.model.name
    folder.mkdir(parents=True, exist_ok=True)
    members, val_mae = [], []
    for k in range(size):
        seed = int(cfg.seed) + k
        member_cfg = copy.deepcopy(cfg)
        with open_dict(member_cfg):
            member_cfg.seed = seed
            member_cfg.model.export_dir = None
            if foundations[k] is not None:  # member k's own start (member-wise: old member k)
                member_cfg.model.foundation = foundations[k]
        member_parts = redraw_train_val(parts, seed) if k else parts
        done = finished_member(out / f"member_{k}", member_cfg.model)
        if done is not None:
            log.info("committee member %d of %d (seed %d): finished earlier, kept", k + 1,
                     size, seed)
            val_mae.append(done)
        else:
            log.info("committee member %d of %d (seed %d)", k + 1, size, seed)
            val_mae.append(_train_member(member_cfg, out / f"member_{k}", source, data,
                                         member_parts, foundations[k]))
        trained, gathered = out / f"member_{k}" / f"{cfg.model.name}.model", folder / f"member_{k}.model"
        if not (gathered.is_file() and filecmp.cmp(trained, gathered, shallow=False)):
            shutil.copyfile(trained, gathered)
        members.append({"file": f"member_{k}.model", "seed": seed,
                        "val_forces_mae_meV_A": val_mae[-1],
                        "val_ids": [str(i) for i in member_parts["val"].meta["id"]]})
    manifest = {"members": [m["file"] for m in members], "details": members,
                "draws": "members share the test split; member k > 0 trains on a seeded "
                         "redraw of the train/val pool (same sizes)",
                "test_ids": [str(i) for i in parts["test"].meta["id"]],
                "foundation": cfg.model.foundation}
    _write_json(folder / "committee.json", manifest)
    if len(parts["test"]):  # the committee mean, loaded as calculator=mlip loads it
        manifest["test_metrics"] = evaluate(folder, parts["test"], cfg.model.device,
                                            cfg.model.dtype)[0]
        _write_json(folder / "committee.json", manifest)
    if cfg.model.export_dir:
        shutil.copytree(folder, Path(cfg.model.export_dir) / folder.name, dirs_exist_ok=True)
        log.info("exported the committee %s to %s", folder.name, cfg.model.export_dir)
    log.info("committee of %d in %s; test metrics of its mean: %s", size, folder,
             json.dumps(manifest.get("test_metrics", {})))
    return float(np.mean(val_mae))


def finished_member(out: Path, mcfg) -> float | None:
    """Validation force MAE (meV/A) of a member trained earlier in ``out`` with the same
    ``model`` config (its metrics file is written last), None when it has to be trained.
    Raises ValueError when ``out`` holds a member trained with other settings."""
    metrics_file, record_file = out / f"{mcfg.name}_metrics.json", out / f"{mcfg.name}.yaml"
    if not (metrics_file.is_file() and (out / f"{mcfg.name}.model").is_file()):
        return None
    try:
        val_mae = float(json.loads(metrics_file.read_text())["val"]["trained"]["forces"]["mae"])
        recorded = (yaml.safe_load(record_file.read_text()) or {}).get("config")
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError):
        return None  # cut short while writing: train again
    wanted = yaml.safe_load(yaml.safe_dump(OmegaConf.to_container(mcfg, resolve=True)))
    if recorded != wanted:
        changed = sorted(k for k in set(recorded or {}) | set(wanted)
                         if (recorded or {}).get(k) != wanted.get(k))
        raise ValueError(f"{out}: holds a member trained with other model settings "
                         f"({changed} differ); use a new run directory or delete {out}")
    return val_mae


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def _train_member(cfg, out: Path, source, data, parts, foundation) -> float:
    """One potential in ``out``; returns its validation force MAE (meV/A)."""
    from hydra.utils import instantiate

    from capml.models import mace as mace_models

    mcfg = cfg.model
    work = out / "mace"
    work.mkdir(parents=True, exist_ok=True)
    files = {k: write_extxyz(work / f"{k}.xyz", for_mace(parts[k]))
             for k in SPLITS if len(parts[k])}
    e0_arg, e0_method, _ = mace_e0s.e0s_argument(mcfg.e0s, parts["train"], foundation,
                                        lambda: instantiate(mcfg.e0s_calculator),
                                        read_attrs(source))
    start = foundation
    if e0_method == "estimated" and not mcfg.multihead_finetuning:
        e0_arg, e0_method, start = mace_e0s.estimated_e0s(foundation, parts["train"], work, mcfg)
    wandb_opts, env = wandb_options(cfg.get("logger"), out)
    argv = trainer_args(_trainer_options(cfg, work, files, e0_arg, start, wandb_opts))
    log.info("mace_run_train %s", " ".join(argv))
    seconds = run_trainer(argv, out / "mace_train.log", env)
    log.info("training took %.0f s", seconds)

    stage_two = work / f"{mcfg.name}_stagetwo.model"
    model_path = out / f"{mcfg.name}.model"
    shutil.copyfile(stage_two if mcfg.mace.get("swa") and stage_two.exists()
                    else work / f"{mcfg.name}.model", model_path)
    module = mace_models.load(model_path, dtype=None)
    ran = verify_run((out / "mace_train.log").read_text(), list(getattr(module, "heads", [])),
                     mcfg)
    mace_e0s.check_saved_e0s(module, ran["e0s"], model_path)
    metrics = evaluate_splits(parts, model_path, foundation, mcfg.device, mcfg.dtype, out)
    record = {"model": mace_models.describe(module),
              "training": _training_record(cfg, source, data, parts, e0_method, ran, seconds,
                                           argv),
              "config": OmegaConf.to_container(mcfg, resolve=True),
              "ids": {k: [str(i) for i in parts[k].meta["id"]] for k in SPLITS}}
    _write_outputs(mcfg, out, model_path, record, metrics)
    log.info("held-out (test) metrics of %s: %s", model_path,
             json.dumps(metrics.get("test", {}).get("trained", {})))
    return float(metrics["val"]["trained"]["forces"]["mae"])


def _training_data(cfg) -> tuple[Path, StructureSet, dict[str, StructureSet]]:
    """(file, labeled rows, their train/val/test parts) of ``cfg.data.low_level``."""
    source = Path(cfg.data.low_level)
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such data file (cfg.data.low_level)")
    data = labeled(read(source))
    parts = split_data(data, SplitSettings.from_config(cfg.data.split), source)
    log.info("%s: %d labeled structures -> train %d, valid %d, test %d", source, len(data),
             *(len(parts[k]) for k in SPLITS))
    return source, data, parts


def _trainer_options(cfg, work: Path, files: dict, e0_arg, foundation, wandb_opts) -> dict:
    """mace_run_train's options: the ``model.mace`` block plus files, E0s, foundation."""
    mcfg = cfg.model
    return {**OmegaConf.to_container(mcfg.mace, resolve=True), **wandb_opts,
            "name": mcfg.name, "seed": int(cfg.seed), "work_dir": str(work),
            "device": mcfg.device, "default_dtype": mcfg.dtype,
            "train_file": str(files["train"]), "valid_file": str(files["val"]),
            "test_file": str(files["test"]) if "test" in files else None,
            "E0s": e0_arg, "foundation_model": foundation,
            "multiheads_finetuning": bool(mcfg.multihead_finetuning) if foundation else None,
            "pt_train_file": mcfg.pt_train_file, "save_cpu": mcfg.device != "cpu"}


def _training_record(cfg, source, data, parts, e0_method, ran, seconds, argv) -> dict:
    """What was trained, on what, how long: the 'training' block of ``<name>.yaml``."""
    return {"command": _command_line(), "data": _relative(source, cfg.paths.root_dir),
            "n_labeled": len(data), "n_train": len(parts["train"]),
            "n_valid": len(parts["val"]), "n_test": len(parts["test"]),
            "foundation": cfg.model.foundation, "e0s_method": e0_method,
            "e0s_eV": {chemical_symbols[z]: v for z, v in (ran["e0s"] or {}).items()},
            "multihead_finetuning": ran["multihead_finetuning"], "loss": ran["loss"],
            "seconds": round(seconds, 1), "seed": int(cfg.seed),
            "mace_version": import_mace("mace.__version__").__version__,
            "trainer_args": argv}


def _write_outputs(mcfg, out: Path, model_path: Path, record: dict, metrics: dict) -> None:
    """``<name>.yaml`` and ``<name>_metrics.json`` beside the model, copied with it to
    ``model.export_dir`` when set."""
    written = [model_path, out / f"{mcfg.name}.yaml", out / f"{mcfg.name}_metrics.json"]
    written[1].write_text(yaml.safe_dump(record, sort_keys=False))
    _write_json(written[2], metrics)  # last: marks the member finished
    if mcfg.export_dir:
        dest = Path(mcfg.export_dir)
        dest.mkdir(parents=True, exist_ok=True)
        for f in written:
            shutil.copyfile(f, dest / f.name)
        log.info("exported %s to %s", [f.name for f in written], dest)


def resolve_foundation(foundation) -> str | None:
    """The foundation as mace's trainer should get it: an absolute path for a file, the
    name for a mace_mp model (checked to be cached or downloadable first)."""
    from capml.models import mace as mace_models

    if foundation is None:
        return None
    path = mace_models.resolve(foundation)  # a clear error for a missing file / no internet
    return str(path) if mace_models.looks_like_path(foundation) else str(foundation)


def evaluate_splits(parts: dict, model_path: Path, foundation, device: str, dtype: str,
                    out: Path) -> dict:
    """Metrics of the trained model (and the starting model, when fine-tuning) on the
    validation and test structures; the test parity figure (Fig. 4) to ``out``."""
    from capml.analysis.mlip_parity import parity_figure, reference_values

    models = {"trained": model_path} | ({"start": foundation} if foundation else {})
    metrics = {"units": {"energy": "meV/atom", "forces": "meV/A", "stress": "meV/A^3"}}
    for split in ("val", "test"):
        if not len(parts[split]):
            continue
        results = {label: evaluate(m, parts[split], device, dtype) for label, m in models.items()}
        metrics[split] = {label: r[0] for label, r in results.items()}
        if split == "test":
            fig = parity_figure(reference_values(parts[split]),
                                {label: r[1] for label, r in results.items()}, metrics[split])
            fig.savefig(out / "parity_test.png", dpi=150)
    return metrics


def _command_line() -> str:
    """``python train.py <overrides>`` of this run, when it runs under Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return ""
    return " ".join(["python train.py", *HydraConfig.get().overrides.task])


def _relative(path: Path, root) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return str(path)
