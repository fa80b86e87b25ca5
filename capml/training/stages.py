"""Training steps of a stage config: pretrain, finetune, from scratch, in order.

A step is ``{level, init_from, max_epochs, lr, batch_size, freeze_layers, target_scaler}``:
it trains on the data file ``cfg.data[level]``, starting from random weights
(``init_from: null``), from the best checkpoint of an earlier step (its name),
or from a checkpoint file. A fine-tuned step keeps the node/edge feature
scalers and the architecture of its starting checkpoint; ``target_scaler``
``refit`` fits the gap scaler on the new training split, ``keep`` reuses the old one.
Each step writes into ``<output_dir>/<step>/``: checkpoints/best.ckpt (and last.ckpt),
predictions.csv, parity_{train,test}.png, errors.png, and metrics.json last.

Steps named in ``stage.shared_steps`` live in ``stage.shared_dir``, in a folder named by
their settings hash, linked from ``<output_dir>/<step>``: jobs of a sweep that vary only
later steps (a learning curve over fine-tuning set sizes, a fine-tuning hyperparameter
search) train such a step once and reuse it. A job holds a lock on the shared folder while
it trains the step, so parallel launchers wait for it instead of training it twice.

Rerunning in the same output directory skips the steps whose metrics.json exists and
resumes a killed step from its checkpoints/last.ckpt (Lightning's ``ckpt_path``:
weights, optimizer, epoch, best-checkpoint and early-stopping state). A step directory
remembers a hash of the settings it was trained with and refuses to be reused by a
run with other settings.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import pickle
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from capml.analysis.statistics import error_metrics
from capml.graphs import NODE_FEATURES, element_table
from capml.training import loggers, plots
from capml.training.datamodule import BandGapDataModule, check_labeled
from capml.training.module import BandGapModule

log = logging.getLogger(__name__)

LEVELS = ("low_level", "high_level")


@dataclass
class StepResult:
    name: str
    level: str
    data: str
    checkpoint: str
    metrics: dict[str, float]
    counts: dict[str, int]
    epochs: int
    seconds: float
    init_from: str | None = None
    extra: dict = field(default_factory=dict)


def net_config(model_cfg) -> dict:
    """BandGapGNN keyword arguments from the ``model`` config group."""
    arch = model_cfg.architecture
    return {"hidden": int(model_cfg.hidden), "n_layers": int(arch.n_layers),
            "conv": str(model_cfg.conv), "pooling": str(arch.pooling),
            "output": str(arch.output), "dropout": float(model_cfg.dropout),
            "head_hidden": int(model_cfg.head_hidden)}


def _step_split(cfg, step):
    """``data.split`` with the step's own ``train_size`` where it sets one (a learning curve
    subsamples the high-level steps only)."""
    if step.get("train_size") is None:
        return cfg.data.split
    return OmegaConf.merge(cfg.data.split, {"train_size": int(step.train_size)})


def check_steps(cfg) -> None:
    """Fail before any training if a step's config or data file is unusable."""
    names = list(cfg.stage.steps)
    for k, (name, step) in enumerate(cfg.stage.steps.items()):
        if step.level not in LEVELS:
            raise ValueError(f"stage.steps.{name}.level={step.level!r}: expected one of {LEVELS}")
        if step.target_scaler not in ("refit", "keep"):
            raise ValueError(f"stage.steps.{name}.target_scaler={step.target_scaler!r}: "
                             "expected 'refit' or 'keep'")
        init = step.get("init_from")
        if init is not None and init in names and names.index(init) >= k:
            raise ValueError(f"stage.steps.{name}.init_from={init!r}: that step runs later")
        if init is not None and init not in names and not Path(init).is_file():
            raise FileNotFoundError(f"stage.steps.{name}.init_from={init}: neither an earlier "
                                    f"step ({names[:k]}) nor a checkpoint file")
    for level in sorted({s.level for s in cfg.stage.steps.values()}):
        check_labeled(cfg.data[level], int(cfg.data.min_labeled))


def run_steps(cfg: DictConfig) -> dict[str, StepResult]:
    check_steps(cfg)
    out = Path(cfg.paths.output_dir)
    results: dict[str, StepResult] = {}
    shared = set(cfg.stage.get("shared_steps") or [])
    if unknown := shared - set(cfg.stage.steps):
        raise ValueError(f"stage.shared_steps = {sorted(shared)}: no step named "
                         f"{sorted(unknown)} (steps: {list(cfg.stage.steps)})")
    if shared and not cfg.stage.get("shared_dir"):
        raise ValueError(f"stage.shared_steps = {sorted(shared)} needs stage.shared_dir, the "
                         "folder that holds them")
    for name, step in cfg.stage.steps.items():
        lock = (link_shared_step(cfg, name, step, out) if name in shared else nullcontext())
        with lock:
            results[name] = (finished_step(cfg, name, step, out)
                             or run_step(cfg, name, step, out, results))
    return results


def link_shared_step(cfg, name: str, step, out: Path):
    """Link ``out/<name>`` to the step's folder in ``stage.shared_dir`` (named by its
    settings hash); returns a context that holds that folder's lock."""
    target = Path(str(cfg.stage.shared_dir)).resolve() / f"{name}-{settings_hash(cfg, step)[:16]}"
    target.mkdir(parents=True, exist_ok=True)
    link = out / name
    if link.is_symlink() and link.resolve() != target:
        raise ValueError(f"{link}: links to {link.resolve()}, a step trained with other "
                         "settings; use another hydra.run.dir")
    if link.exists() and not link.is_symlink():
        raise ValueError(f"{link}: a step trained in this run directory, not in "
                         f"stage.shared_dir = {cfg.stage.shared_dir}; use another hydra.run.dir")
    if not link.is_symlink():
        out.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target, target_is_directory=True)
    return _exclusive(target.with_name(target.name + ".lock"))


@contextmanager
def _exclusive(path: Path):
    """An exclusive advisory lock on ``path``, blocking while another process holds it
    (released by the kernel if that process dies)."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def settings_hash(cfg, step) -> str:
    """Hash of what a step learns from (model, data, seed, step settings); not of where it
    is written, nor of callbacks and trainer settings, which a resumed run may change."""
    doc = {key: OmegaConf.to_container(cfg[key], resolve=True) if OmegaConf.is_config(cfg[key])
           else cfg[key] for key in ("model", "data", "seed")}
    doc["step"] = OmegaConf.to_container(step, resolve=True)
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def claim_step_dir(step_dir: Path, digest: str) -> None:
    """Record the settings hash of ``step_dir``; refuse one trained with other settings."""
    marker = step_dir / "settings.sha256"
    if marker.exists() and marker.read_text().strip() != digest:
        raise ValueError(f"{step_dir}: holds a training step run with other settings "
                         f"(hash {marker.read_text().strip()[:12]}, this run {digest[:12]}); "
                         "use another hydra.run.dir, or delete that directory to retrain")
    step_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(digest)


def finished_step(cfg, name: str, step, out: Path) -> StepResult | None:
    """The result of a step that an earlier run in ``out`` finished (metrics.json is
    written last), else None."""
    path = out / name / "metrics.json"
    if not path.is_file():
        return None
    claim_step_dir(out / name, settings_hash(cfg, step))
    log.info("step %s: finished earlier (%s); skipped", name, path)
    return StepResult(**json.loads(path.read_text()))


def resume_point(ckpt_dir: Path, name: str) -> str | None:
    """last.ckpt of a killed run of the step, or None to start over (stale best
    checkpoints removed, so only this run's best is left where the README points)."""
    last = ckpt_dir / "last.ckpt"
    if last.is_file():
        try:
            epoch = torch.load(last, map_location="cpu", weights_only=False)["epoch"]
            log.info("step %s: resuming from %s (after epoch %d)", name, last, epoch)
            return str(last)
        except (RuntimeError, EOFError, KeyError, pickle.UnpicklingError) as err:  # cut short
            log.warning("step %s: %s is unreadable (%s); starting the step over", name, last,
                        err)
    for stale in ckpt_dir.glob("*.ckpt"):
        stale.unlink()
    return None


def _init_checkpoint(step, previous: dict[str, StepResult]) -> str | None:
    init = step.get("init_from")
    if init is None:
        return None
    if init in previous:
        return previous[init].checkpoint
    return str(init)


def run_step(cfg, name: str, step, out: Path, previous: dict[str, StepResult]) -> StepResult:
    t0 = time.perf_counter()
    pl.seed_everything(int(cfg.seed), workers=True)
    step_dir = out / name
    claim_step_dir(step_dir, settings_hash(cfg, step))
    resume = resume_point(step_dir / "checkpoints", name)
    init = _init_checkpoint(step, previous)
    cutoff = float(cfg.data.cutoff)
    start, net, table, scalers = _starting_point(init, cfg, name)
    path = cfg.data[step.level]
    dm = BandGapDataModule(
        path, element_table=table, cutoff=cutoff,
        batch_size=int(step.get("batch_size") or cfg.data.batch_size),
        split=_step_split(cfg, step), num_workers=int(cfg.data.num_workers),
        graph_cache=bool(cfg.data.graph_cache), min_labeled=int(cfg.data.min_labeled),
        seed=int(cfg.seed), scalers=scalers, refit_target=step.target_scaler == "refit",
        system=_system(cfg) if cfg.data.split.get("group_by") else None)
    dm.setup()
    lr = float(step.lr if step.get("lr") is not None else cfg.model.lr)
    module = BandGapModule(net=net, scalers=dm.scalers.to_dict(), node_features=list(NODE_FEATURES),
                           cutoff=cutoff, element_table=table, lr=lr,
                           weight_decay=float(cfg.model.weight_decay),
                           freeze_layers=int(step.freeze_layers), level=str(step.level))
    if start is not None:
        module.net.load_state_dict(start.net.state_dict())
    hparams = {"step": name, "data": str(path), "init_from": init,
               "split_source": dm.split_source, "n_dropped_unlabeled": dm.n_dropped,
               **OmegaConf.to_container(cfg.model, resolve=True),
               "step_cfg": OmegaConf.to_container(step, resolve=True), "seed": int(cfg.seed)}
    logger = loggers.make_logger(cfg.logger, name, out, hparams)
    callbacks = [instantiate(c, **({"dirpath": str(step_dir / "checkpoints")}
                                   if "ModelCheckpoint" in c._target_ else {}))
                 for c in (cfg.callbacks or {}).values() if c is not None]
    trainer = instantiate(cfg.trainer, max_epochs=int(step.max_epochs), callbacks=callbacks,
                          logger=logger, default_root_dir=str(step_dir))
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=resume)
        fit_info = {"val/mae_best": float(trainer.callback_metrics.get("val/mae_best",
                                                                       float("nan"))),
                    "epochs": int(trainer.current_epoch)}
        best = _best_checkpoint(trainer, step_dir)
        if not Path(best).is_file():
            trainer.save_checkpoint(best, weights_only=False)
        model = BandGapModule.load_from_checkpoint(best, map_location="cpu",
                                                   weights_only=True)
        trainer.test(model, datamodule=dm, verbose=False)  # logs test/* to the logger
        result = _finish_step(trainer, model, dm, name, step, path, best, step_dir, fit_info)
        loggers.log_images(logger, {f"{name}/{k}": v for k, v in result.extra["figures"].items()})
        loggers.log_checkpoint(logger, best, name, result.metrics)
    finally:
        loggers.finish(logger)
    result.seconds = time.perf_counter() - t0
    result.init_from = step.get("init_from")
    result.extra["init_checkpoint"] = init
    (step_dir / "metrics.json").write_text(json.dumps(asdict(result), indent=2))
    log.info("step %s: test MAE %.4f eV (%d train / %d val / %d test), %.0f s", name,
             result.metrics["test/mae"], result.counts["train"], result.counts["val"],
             result.counts["test"], result.seconds)
    return result


def _starting_point(init: str | None, cfg, name: str):
    """(pretrained module or None, net settings, element table, scalers or None) of a step.

    A fine-tuned step takes architecture, element table and feature scalers from its
    starting checkpoint, whatever ``cfg.model`` says; its graph cutoff must match.
    """
    if init is None:
        return None, net_config(cfg.model), element_table(), None
    start = BandGapModule.load_from_checkpoint(init, map_location="cpu", weights_only=True)
    cutoff = float(cfg.data.cutoff)
    if abs(float(start.hparams.cutoff) - cutoff) > 1e-9:
        raise ValueError(f"{init}: trained with graph cutoff {start.hparams.cutoff} A, but "
                         f"data.cutoff = {cutoff} A")
    net = dict(start.hparams.net)
    if net != net_config(cfg.model):
        log.warning("step %s: the architecture comes from %s (%s), not from the model config",
                    name, init, net)
    return start, net, start.element_table.numpy(), dict(start.hparams.scalers)


def _best_checkpoint(trainer, step_dir: Path) -> str:
    """Path of the validation-best checkpoint; the final weights when none was kept
    (no ModelCheckpoint callback, or fast_dev_run)."""
    cb = trainer.checkpoint_callback
    if cb is not None and cb.best_model_path:
        return cb.best_model_path
    return str(step_dir / "checkpoints" / "last.ckpt")


def _system(cfg):
    from capml.structures import System

    return System.from_config(cfg.system)


def _predict(trainer, model, loader) -> np.ndarray:
    parts = trainer.predict(model, dataloaders=loader)
    return torch.cat(parts).double().numpy() if parts else np.zeros(0)


def _full_pass_trainer(trainer) -> pl.Trainer:
    """A trainer on ``trainer``'s accelerator that predicts every batch (a fast_dev_run or
    limit_*_batches trainer would predict one, or a fraction)."""
    return pl.Trainer(accelerator=trainer.accelerator, devices=1, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False)


def _finish_step(trainer, model, dm, name, step, path, best, step_dir, fit_info) -> StepResult:
    rows, figures, errors = [], {}, {}
    metrics = {}
    predictor = _full_pass_trainer(trainer)
    for split in ("train", "val", "test"):
        meta = dm.meta_of(split)
        pred = _predict(predictor, model, dm.loader(split))
        m = error_metrics(meta["band_gap"], pred)
        metrics.update({f"{split}/{k}": v for k, v in m.items()})
        errors[split] = pred - meta["band_gap"]
        frame = pd.DataFrame({k: v for k, v in meta.items()})
        frame["split"], frame["predicted_band_gap"] = split, pred
        rows.append(frame)
        if split != "val":
            figures[f"parity_{split}"] = plots.parity_plot(
                meta["band_gap"], pred, f"{name}: {split}", step_dir / f"parity_{split}.png")
    figures["errors"] = plots.error_histogram(errors, f"{name}: errors",
                                              step_dir / "errors.png")
    pd.concat(rows).to_csv(step_dir / "predictions.csv", index=False)
    metrics["val/mae_best"] = fit_info["val/mae_best"]
    counts = {s: len(dm.datasets[s]) for s in ("train", "val", "test")}
    return StepResult(name=name, level=str(step.level), data=str(path), checkpoint=str(best),
                      metrics=metrics, counts=counts, epochs=fit_info["epochs"],
                      seconds=0.0, extra={"figures": {k: str(v) for k, v in figures.items()},
                                          "split_source": dm.split_source,
                                          "n_dropped_unlabeled": dm.n_dropped})
