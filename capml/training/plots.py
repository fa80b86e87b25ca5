"""Parity plots and error histograms of band-gap predictions (paper Fig. 3e-j)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def parity_plot(true_ev, pred_ev, title: str, path) -> Path:
    """Predicted vs reference gap (eV) with the y = x line and the MAE in the legend."""
    true_ev, pred_ev = np.asarray(true_ev), np.asarray(pred_ev)
    mae = float(np.mean(np.abs(pred_ev - true_ev))) if len(true_ev) else float("nan")
    lo = float(min(true_ev.min(), pred_ev.min())) if len(true_ev) else 0.0
    hi = float(max(true_ev.max(), pred_ev.max())) if len(true_ev) else 1.0
    pad = 0.05 * (hi - lo or 1.0)
    fig, ax = plt.subplots(figsize=(4.2, 4.0), dpi=120)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.5", lw=1)
    ax.scatter(true_ev, pred_ev, s=10, alpha=0.7, label=f"N = {len(true_ev)}, MAE = {mae:.3f} eV")
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel("reference band gap (eV)")
    ax.set_ylabel("GNN band gap (eV)")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def error_histogram(errors_by_split: dict, title: str, path, bins: int = 30) -> Path:
    """Histogram of prediction errors (pred - ref, eV) per split."""
    fig, ax = plt.subplots(figsize=(4.6, 3.4), dpi=120)
    finite = [np.asarray(e) for e in errors_by_split.values() if len(e)]
    span = max((float(np.abs(e).max()) for e in finite), default=1.0) or 1.0
    edges = np.linspace(-span, span, bins + 1)
    for name, err in errors_by_split.items():
        if len(err):
            ax.hist(err, bins=edges, alpha=0.6, density=True, label=f"{name} (N = {len(err)})")
    ax.axvline(0.0, color="0.4", lw=1)
    ax.set_xlabel("GNN - reference band gap (eV)")
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
