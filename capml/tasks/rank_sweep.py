"""``analyze.py task=rank_sweep task.dir=<multirun dir>``: rank the runs of a training sweep.

Reads the ``metrics.json`` that every ``train.py`` job writes into its directory
(status, objective, overrides, per-step metrics) and ranks the jobs by
``task.metric`` (default: the sweep objective, the validation MAE of the
optimised step; failed or diverged trials last), as the paper's rank-models step.
A job directory (one with Hydra's ``.hydra/``) without metrics.json is a job that
died before writing it: it is ranked last with status ``died``. Writes ranking.csv
into the run directory, prints the top rows and lists every job that did not
finish, with its error.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def collect(sweep_dir) -> pd.DataFrame:
    """One row per job of ``sweep_dir`` with its overrides and metrics."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"{sweep_dir}: no such sweep directory")
    rows = []
    for path in sorted(sweep_dir.rglob("metrics.json")):
        doc = json.loads(path.read_text())
        if "status" not in doc:  # a step's own metrics.json inside a job directory
            continue
        row = {"job": str(path.parent.relative_to(sweep_dir)), "status": doc["status"],
               "objective": float(doc["objective"]),
               "overrides": " ".join(doc.get("overrides", []))}
        step = doc.get("steps", {}).get(doc.get("optimized_step"), {})
        for key, value in step.get("metrics", {}).items():
            row[key] = value
        row["epochs"] = step.get("epochs")
        row["error"] = doc.get("error", "")
        rows.append(row)
    rows += died_jobs(sweep_dir)
    if not rows:
        raise FileNotFoundError(f"{sweep_dir}: no train.py job metrics (metrics.json) found")
    return pd.DataFrame(rows)


def died_jobs(sweep_dir: Path) -> list[dict]:
    """Rows of the job directories of ``sweep_dir`` that hold no metrics.json."""
    rows = []
    for hydra_dir in sorted(sweep_dir.rglob(".hydra")):
        job = hydra_dir.parent
        if (job / "metrics.json").exists():
            continue
        overrides = hydra_dir / "overrides.yaml"
        logs = sorted(p.name for p in job.glob("*.log"))
        rows.append({"job": str(job.relative_to(sweep_dir)), "status": "died",
                     "objective": math.inf,
                     "overrides": " ".join(OmegaConf.load(overrides)) if overrides.exists()
                     else "",
                     "error": "no metrics.json: the job stopped before writing it"
                              + (f" (see {job / logs[0]})" if logs else "")})
    return rows


def rank(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    if metric not in table:
        raise KeyError(f"task.metric={metric!r}: not a column of the sweep table "
                       f"(have {sorted(c for c in table.columns if '/' in c or c == 'objective')})")
    key = table[metric].astype(float).map(lambda v: v if math.isfinite(v) else math.inf)
    out = table.assign(_key=key).sort_values(["_key", "job"]).drop(columns="_key")
    out.insert(0, "rank", range(1, len(out) + 1))
    return out.reset_index(drop=True)


def run(cfg: DictConfig) -> Path:
    t = cfg.task
    ranked = rank(collect(t.dir), str(t.metric))
    out = Path(t.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    ranked.to_csv(out, index=False)
    cols = [c for c in ("rank", "job", "status", "objective", "val/mae_best", "test/mae",
                        "test/r2", "overrides") if c in ranked]
    with pd.option_context("display.width", 250, "display.max_colwidth", 120,
                           "display.float_format", "{:.4f}".format):
        print(ranked[cols].head(int(t.top)).to_string(index=False))
    n_ok = int((ranked["status"] == "ok").sum())
    log.info("ranked %d jobs (%d ok, %d failed) of %s by %s -> %s", len(ranked), n_ok,
             len(ranked) - n_ok, t.dir, t.metric, out)
    bad = ranked[ranked["status"] != "ok"]
    if len(bad):
        print(f"\n{len(bad)} of {len(ranked)} jobs did not finish:")
        for job in bad.itertuples():
            print(f"  job {job.job} ({job.status}; {job.overrides}): {job.error}")
    return out
