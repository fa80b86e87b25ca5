"""``analyze.py task=dataset_report data=demo``: a data card for the low- and high-level sets.

Writes ``counts.csv`` (structures per level, composition, method and temperature or
amplitude, with labeled/failed/pending counts), ``labels.csv`` (summary statistics of
every label per level) and ``gap_vs_temperature.csv`` (band gap per level, composition and
temperature of the thermal cells, equilibrium as T = 0) and ``dataset_report.png``
(band-gap distributions of both levels, the analogue of the paper's Fig. 3c,d, plus gap vs
composition, gap vs temperature and force magnitudes).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from capml import data as store

log = logging.getLogger(__name__)


def frame(path) -> pd.DataFrame:
    """One row per structure: metadata, status, per-structure labels and max |force|."""
    d = store.read(path)
    cols = {k: v for k, v in d.meta.items()}
    df = pd.DataFrame(cols)
    for key in ("energy", "band_gap"):
        if key in d.labels:
            df[key] = d.labels[key]
    if "energy" in d.labels:
        df["energy_per_atom"] = d.labels["energy"] / d.n_atoms
    if "forces" in d.labels:
        norms = np.linalg.norm(d.labels["forces"], axis=1)
        df["max_force"] = np.maximum.reduceat(norms, d.offsets[:-1])
    status = df.get("label_status", pd.Series([""] * len(df)))
    df["state"] = np.where(status == "ok", "labeled",
                           np.where(status.str.startswith("failed"), "failed", "pending"))
    df["n_atoms"] = d.n_atoms
    return df


def counts_table(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    rows = []
    for level, df in frames.items():
        df = df.assign(condition=np.where(df["method"] == "phonon",
                                          df["temperature"].map(lambda t: f"T={t:g} K"),
                                          np.where(df["method"] == "uniform",
                                                   df["amplitude"].map(lambda a: f"A={a:g} A"),
                                                   "")))
        g = df.groupby(["x", "method", "condition", "state"]).size().unstack(fill_value=0)
        g = g.reset_index()
        g.insert(0, "set", level)
        rows.append(g)
    out = pd.concat(rows, ignore_index=True).fillna(0)
    for col in ("labeled", "failed", "pending"):
        if col not in out:
            out[col] = 0
        out[col] = out[col].astype(int)
    out["total"] = out[["labeled", "failed", "pending"]].sum(axis=1)
    return out


def label_stats(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    rows = []
    for level, df in frames.items():
        ok = df[df["state"] == "labeled"]
        for key in ("band_gap", "energy_per_atom", "max_force", "label_seconds"):
            if key in ok and ok[key].notna().any():
                v = ok[key].dropna()
                rows.append({"set": level, "label": key, "n": len(v), "mean": v.mean(),
                             "std": v.std(), "min": v.min(), "median": v.median(),
                             "max": v.max()})
    return pd.DataFrame(rows)


def gap_vs_temperature(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Band-gap mean, std and count per level, composition and temperature (K) of the
    labeled thermal cells; the equilibrium cells enter as T = 0."""
    rows = []
    for level, df in frames.items():
        if "band_gap" not in df:
            continue
        ok = df[(df["state"] == "labeled") & df["band_gap"].notna()
                & df["method"].isin(["phonon", "equilibrium"])]
        t = np.where(ok["method"] == "equilibrium", 0.0, ok["temperature"])
        g = ok.assign(temperature=t).groupby(["x", "temperature"])["band_gap"]
        rows.append(g.agg(n="size", mean="mean", std="std").reset_index()
                    .assign(set=level))
    if not rows:
        return pd.DataFrame(columns=["set", "x", "temperature", "n", "mean", "std"])
    out = pd.concat(rows, ignore_index=True)
    return out[["set", "x", "temperature", "n", "mean", "std"]]


def plot(frames: dict[str, pd.DataFrame], by_temperature: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    for level, df in frames.items():
        ok = df[(df["state"] == "labeled") & df.get("band_gap", pd.Series(dtype=float)).notna()]
        if len(ok) == 0:
            continue
        axes[0].hist(ok["band_gap"], bins=30, alpha=0.6, label=f"{level} (n={len(ok)})")
        axes[1].scatter(ok["x"], ok["band_gap"], s=8, alpha=0.5, label=level)
        if "max_force" in ok and ok["max_force"].notna().any():
            axes[3].hist(ok["max_force"].dropna(), bins=30, alpha=0.6, label=level)
    for (level, x), g in by_temperature.groupby(["set", "x"]):
        if x in (0.0, 1.0):  # the end members; the composition panel shows the rest
            axes[2].errorbar(g["temperature"], g["mean"], yerr=g["std"].fillna(0), marker="o",
                             capsize=3, label=f"{level.split(' ')[0]}, x = {x:g}")
    axes[0].set(xlabel="band gap (eV)", ylabel="structures", title="gap distribution")
    axes[1].set(xlabel="x (Br fraction)", ylabel="band gap (eV)", title="gap vs composition")
    axes[2].set(xlabel="temperature (K); 0 = equilibrium cell", ylabel="band gap (eV)",
                title="gap vs temperature (mean, std)")
    axes[3].set(xlabel="max |F| per structure (eV/A)", ylabel="structures", title="forces")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(cfg: DictConfig) -> Path:
    out = Path(cfg.task.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    frames = {}
    for key in ("low_level", "high_level"):
        path = cfg.data.get(key)
        if path is None or not Path(path).exists():
            raise FileNotFoundError(f"data.{key} = {path}: no such data file")
        frames[f"{key} ({Path(path).stem})"] = frame(path)
    counts = counts_table(frames)
    stats = label_stats(frames)
    by_temperature = gap_vs_temperature(frames)
    counts.to_csv(out / "counts.csv", index=False)
    stats.to_csv(out / "labels.csv", index=False)
    by_temperature.to_csv(out / "gap_vs_temperature.csv", index=False)
    plot(frames, by_temperature, out / "dataset_report.png")
    summary = counts.groupby("set")[["labeled", "failed", "pending", "total"]].sum()
    log.info("data card in %s\n%s\n%s", out, summary.to_string(),
             stats.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return out
