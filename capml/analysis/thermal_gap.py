"""Thermal band-gap renormalisation (paper Eq. 6) and its tables and figures.

Delta Eg(T) = <Eg>_T - Eg(0 K), the average over MD snapshots after an
equilibration window minus the gap of the relaxed structure the MD started
from. Classical MD has no zero-point motion, so Delta Eg(T -> 0) -> 0; the
quantum alternative averages the gap over harmonic thermal-displacement samples
(Bose-Einstein amplitudes, zero-point motion included). Gaps in eV.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from capml.analysis.statistics import mean_with_error
from capml.simulation.trajectory import equilibrated


def md_renormalisation(gaps: np.ndarray, times_fs: np.ndarray, gap_0K: float,
                       equilibration_ps: float) -> dict:
    """Mean gap of the frames after ``equilibration_ps`` and Delta Eg with an
    autocorrelation-aware standard error (the 0 K gap is exact, so the errors agree)."""
    times_fs = np.asarray(times_fs, dtype=float)
    keep = equilibrated(times_fs, equilibration_ps, where="thermal gap")
    est = mean_with_error(np.asarray(gaps, dtype=float)[keep])
    spacing_fs = float(np.median(np.diff(times_fs[keep])))
    return {"n_frames": est.n_samples, "tau_int_fs": est.tau_int * spacing_fs,
            "n_effective": est.n_effective, "gap_0K": float(gap_0K), "gap_mean": est.mean,
            "gap_sem": est.sem, "gap_std": est.std, "delta_gap": est.mean - float(gap_0K),
            "delta_gap_sem": est.sem,
            "relative_change": (est.mean - float(gap_0K)) / float(gap_0K)}


def sample_renormalisation(gaps: np.ndarray, gap_0K: float) -> dict:
    """The same quantities for independent samples (thermal displacements)."""
    gaps = np.asarray(gaps, dtype=float)
    if len(gaps) < 2:
        raise ValueError(f"{len(gaps)} samples: expected at least 2")
    sem = gaps.std(ddof=1) / np.sqrt(len(gaps))
    return {"n_frames": len(gaps), "gap_0K": float(gap_0K), "gap_mean": gaps.mean(),
            "gap_sem": sem, "gap_std": gaps.std(ddof=1), "delta_gap": gaps.mean() - gap_0K,
            "delta_gap_sem": sem, "relative_change": (gaps.mean() - gap_0K) / gap_0K}


def table_one(results: pd.DataFrame, method: str = "md") -> pd.DataFrame:
    """The paper's Table I layout: one row per composition, Eg(0 K) and Eg(T) columns
    (eV) as 'mean +- sem'."""
    sub = results[results["method"] == method]
    rows = []
    for x, group in sub.groupby("x"):
        row = {"x": x, "Eg_0K": f"{group['gap_0K'].iloc[0]:.3f}"}
        for _, r in group.sort_values("temperature").iterrows():
            row[f"Eg_{r['temperature']:g}K"] = f"{r['gap_mean']:.3f} +- {r['gap_sem']:.3f}"
        rows.append(row)
    return pd.DataFrame(rows)


def plot(results: pd.DataFrame, path: Path) -> Path:
    """Fig. 7b-d: Eg vs x at each T, Eg vs T at each x, relative change vs x."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for method, style in (("md", "-o"), ("thermal_displacements", "--s")):
        sub = results[results["method"] == method]
        if sub.empty:
            continue
        label = "MD" if method == "md" else "harmonic (quantum)"
        zero = sub.groupby("x")["gap_0K"].first()
        axes[0].plot(zero.index, zero.values, "k" + style[-1], label="0 K" if method == "md"
                     else None)
        for temp, g in sub.groupby("temperature"):
            g = g.sort_values("x")
            axes[0].errorbar(g["x"], g["gap_mean"], g["gap_sem"], fmt=style, capsize=2,
                             label=f"{temp:g} K ({label})")
            axes[2].errorbar(g["x"], 100 * g["relative_change"],
                             100 * g["delta_gap_sem"] / g["gap_0K"], fmt=style, capsize=2,
                             label=f"{temp:g} K ({label})")
        for x, g in sub.groupby("x"):
            g = g.sort_values("temperature")
            axes[1].errorbar(np.r_[0.0, g["temperature"]], np.r_[g["gap_0K"].iloc[0],
                             g["gap_mean"]], np.r_[0.0, g["gap_sem"]], fmt=style, capsize=2,
                             label=f"x = {x:.3g} ({label})")
    axes[0].set(xlabel="x (Br)", ylabel="band gap (eV)", title="Eg vs composition")
    axes[1].set(xlabel="T (K)", ylabel="band gap (eV)", title="Eg vs temperature")
    axes[2].set(xlabel="x (Br)", ylabel="Delta Eg / Eg(0 K) (%)", title="relative change")
    for ax in axes:
        ax.legend(fontsize=6)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path
