"""Learning curve of the two-stage GNN: high-level test error against the number of
high-level training structures, fine-tuned from the low-level model vs from scratch.

Pure functions over a table with one row per (job, step): the job's seed and high-level
training-set size, the step (``finetune`` or ``scratch``) and its test MAE (eV). Seeds pair
the two steps (same split, same subsample), so the effect of pretraining is judged on the
paired difference, whose spread over seeds is much smaller than either curve's.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def summarise(rows: pd.DataFrame, tuned: str = "finetune", scratch: str = "scratch"
              ) -> pd.DataFrame:
    """Per training-set size: mean, standard error (over seeds) of both steps' test MAE,
    and of their paired difference (tuned - scratch, eV; negative = pretraining helps)."""
    need = {"n_train", "seed", "step", "test_mae_eV"}
    if missing := need - set(rows.columns):
        raise KeyError(f"learning-curve rows lack columns {sorted(missing)}")
    wide = rows.pivot_table(index=["n_train", "seed"], columns="step", values="test_mae_eV")
    for step in (tuned, scratch):
        if step not in wide:
            raise KeyError(f"no '{step}' step in the jobs (steps found: {sorted(wide.columns)})")
    wide = wide.dropna(subset=[tuned, scratch])
    wide["difference"] = wide[tuned] - wide[scratch]
    out = []
    for n, group in wide.groupby(level="n_train"):
        row = {"n_train": int(n), "n_seeds": len(group)}
        for col, name in ((tuned, "finetune"), (scratch, "scratch"),
                          ("difference", "difference")):
            mean, sem = _mean_sem(group[col].to_numpy())
            row[f"{name}_mae_eV"], row[f"{name}_sem_eV"] = mean, sem
        row["pretraining"] = verdict(row["difference_mae_eV"], row["difference_sem_eV"])
        out.append(row)
    return pd.DataFrame(out)


def _mean_sem(values: np.ndarray) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return float("nan"), float("nan")
    sem = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else float("nan")
    return float(values.mean()), float(sem)


def verdict(difference: float, sem: float, z: float = 2.0) -> str:
    """'helps' / 'hurts' where the paired difference is beyond ``z`` standard errors,
    else 'no measurable effect'."""
    if not np.isfinite(sem):
        return "one seed: no error bar"
    if difference < -z * sem:
        return "helps"
    if difference > z * sem:
        return "hurts"
    return "no measurable effect"


def plot(summary: pd.DataFrame, path, title: str = "") -> None:
    """Test MAE vs high-level training-set size, both steps with standard-error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.0, 3.6), constrained_layout=True)
    for name, label, marker in (("finetune", "pretrained, fine-tuned", "o"),
                                ("scratch", "from scratch", "s")):
        ax.errorbar(summary["n_train"], 1e3 * summary[f"{name}_mae_eV"],
                    yerr=1e3 * summary[f"{name}_sem_eV"].fillna(0), marker=marker,
                    capsize=3, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("high-level training structures")
    ax.set_ylabel("high-level test MAE (meV)")
    ax.set_title(title or "band-gap GNN learning curve", fontsize=9)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=150)
    plt.close(fig)
