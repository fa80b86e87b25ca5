"""``analyze.py task=learning_curve task.dir=<train.py multirun dir>``: the GNN learning
curve, fine-tuned vs from scratch, over high-level training-set sizes and seeds.

Reads every job's ``metrics.json`` (its steps' test metrics and training-set sizes) and
``.hydra/config.yaml`` (its seed); writes learning_curve.csv (one row per job and step),
learning_curve_summary.csv (per size: means, standard errors, paired difference, verdict)
and learning_curve.png. The jobs come from ``python train.py -m experiment=learning_curve``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from capml.analysis.learning_curve import plot, summarise

log = logging.getLogger(__name__)


def collect(sweep_dir) -> pd.DataFrame:
    """One row per (job, high-level step) of a train.py multirun directory."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"task.dir={sweep_dir}: no such multirun directory")
    rows, failed = [], []
    for path in sorted(sweep_dir.glob("*/metrics.json")):
        doc = json.loads(path.read_text())
        if doc.get("status") != "ok":
            failed.append(f"{path.parent.name}: {doc.get('error', doc.get('status'))}")
            continue
        seed = OmegaConf.load(path.parent / ".hydra" / "config.yaml").seed
        for step in doc["steps"].values():
            if step["level"] != "high_level":
                continue
            rows.append({"job": path.parent.name, "seed": int(seed), "step": step["name"],
                         "n_train": int(step["counts"]["train"]),
                         "n_test": int(step["counts"]["test"]),
                         "test_mae_eV": float(step["metrics"]["test/mae"]),
                         "test_rmse_eV": float(step["metrics"]["test/rmse"])})
    for line in failed:
        log.warning("left out failed job %s", line)
    if not rows:
        raise FileNotFoundError(f"{sweep_dir}: no finished train.py jobs (*/metrics.json "
                                f"with status ok){'; failed: ' + '; '.join(failed) if failed else ''}")
    return pd.DataFrame(rows)


def run(cfg: DictConfig) -> Path:
    t = cfg.task
    rows = collect(t.dir)
    summary = summarise(rows, tuned=str(t.tuned_step), scratch=str(t.scratch_step))
    out = Path(t.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows.to_csv(out / "learning_curve.csv", index=False)
    summary.to_csv(out / "learning_curve_summary.csv", index=False)
    plot(summary, out / "learning_curve.png",
         title=f"{rows['seed'].nunique()} seeds, N_test = {rows['n_test'].iloc[0]}")
    with pd.option_context("display.width", 200, "display.float_format", "{:.4f}".format):
        print(summary.to_string(index=False))
    log.info("learning curve of %d jobs -> %s", rows["job"].nunique(), out)
    return out
