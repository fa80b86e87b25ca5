"""``python train.py``: run the steps of ``cfg.stage``, summarise, return the sweep objective.

The summary (printed, and written as metrics.json / metrics.csv in the run
directory) puts the test metrics of every step side by side; with the default
two-stage config it answers whether pretraining on the low level helps on the
high level (finetune vs scratch on the same high-level test split).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from capml.data import DataError
from capml.training.stages import StepResult, run_steps
from capml.utils.validation import check

log = logging.getLogger(__name__)


def summary_table(results: dict[str, StepResult]) -> pd.DataFrame:
    rows = []
    for r in results.values():
        m = r.metrics
        rows.append({"step": r.name, "level": r.level, "init_from": r.init_from or "-",
                     "n_train": r.counts["train"], "n_val": r.counts["val"],
                     "n_test": r.counts["test"],
                     "train_mae_eV": m["train/mae"], "val_mae_best_eV": m["val/mae_best"],
                     "test_mae_eV": m["test/mae"], "test_rmse_eV": m["test/rmse"],
                     "test_r2": m["test/r2"], "test_max_eV": m["test/max"],
                     "epochs": r.epochs, "seconds": round(r.seconds, 1)})
    return pd.DataFrame(rows)


def verdict(results: dict[str, StepResult]) -> str | None:
    """One sentence comparing fine-tuned and from-scratch test MAE on the same split."""
    tuned = [r for r in results.values() if r.init_from and r.level == "high_level"]
    scratch = [r for r in results.values() if not r.init_from and r.level == "high_level"]
    if not tuned or not scratch:
        return None
    a, b = tuned[0], scratch[0]
    ma, mb = a.metrics["test/mae"], b.metrics["test/mae"]
    change = (ma - mb) / mb * 100 if mb > 0 else float("nan")
    helps = "helps" if ma < mb else "does not help"
    return (f"pretraining {helps} here: high-level test MAE {ma:.4f} eV fine-tuned ({a.name}) "
            f"vs {mb:.4f} eV from scratch ({b.name}), {change:+.1f} % "
            f"(N_test = {a.counts['test']}; with so few test structures differences of a "
            "few meV are noise)")


def run(cfg: DictConfig) -> float:
    """Train every step of ``cfg.stage``; return ``cfg.optimized_metric`` of the step
    ``cfg.stage.optimize``."""
    check(cfg, "train")  # bad values fail here, before any data is read
    if cfg.get("torch_threads"):
        torch.set_num_threads(int(cfg.torch_threads))
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = run_steps(cfg)
    table = summary_table(results)
    table.to_csv(out / "metrics.csv", index=False)
    text = verdict(results)
    objective_step = str(cfg.stage.optimize)
    value = float(results[objective_step].metrics[str(cfg.optimized_metric)])
    _write_metrics(out, cfg, "ok", value, results, text)
    if cfg.model.get("export"):
        _export(results[objective_step].checkpoint, Path(cfg.model.export))
    with pd.option_context("display.width", 200, "display.max_columns", 30,
                           "display.float_format", "{:.4f}".format):
        print(f"\nband-gap GNN, test metrics per step (eV), run dir {out}\n"
              f"{table.to_string(index=False)}")
    if text:
        print(text)
    return value


def _export(checkpoint: str, dest: Path) -> None:
    """Copy a checkpoint atomically (it is self-contained: scalers, features, hparams)."""
    import shutil

    from capml.data.store import atomic_path

    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp:
        shutil.copyfile(checkpoint, tmp)
    log.info("exported %s to %s", checkpoint, dest)


def _overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def _write_metrics(out: Path, cfg, status: str, objective: float, results=None,
                   text: str | None = None, error: str | None = None) -> None:
    doc = {"status": status, "objective": objective, "optimized_metric": cfg.optimized_metric,
           "optimized_step": cfg.stage.optimize, "overrides": _overrides(),
           "model": OmegaConf.to_container(cfg.model, resolve=True),
           "steps": {k: asdict(v) for k, v in (results or {}).items()}}
    if text:
        doc["verdict"] = text
    if error:
        doc["error"] = error
    (out / "metrics.json").write_text(json.dumps(doc, indent=2, default=str))


def objective(cfg: DictConfig) -> float:
    """``run`` for sweeps: in a multirun job a diverged or failed trial returns inf
    (and records why in metrics.json) instead of killing the sweep. Missing or
    unlabeled data still raises, since it would fail every trial."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        value = run(cfg)
    except Exception as err:  # any trial failure is a bad point for the sweeper
        if not multirun:
            raise
        out = Path(cfg.paths.output_dir)
        out.mkdir(parents=True, exist_ok=True)  # the job's record, for rank_sweep
        _write_metrics(out, cfg, "failed", math.inf, error=f"{type(err).__name__}: {err}")
        if isinstance(err, (DataError, FileNotFoundError)):
            raise  # unusable data would fail every trial: stop the sweep
        log.exception("trial failed; returning inf to the sweeper")
        return math.inf
    if not math.isfinite(value):
        log.warning("objective %s = %s; returning inf", cfg.optimized_metric, value)
        return math.inf
    return value
