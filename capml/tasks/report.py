"""``analyze.py task=report``: one folder with every figure, table and a summary.

``task.sources`` maps section names to finished run directories (simulate.py,
analyze.py or train.py outputs). Known tables found there (see TABLES) are
copied to ``tables/`` and rendered into ``report.md``; every PNG is copied to
``figures/<section>_<relative path>.png`` and linked from the report.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from capml.utils.tables import markdown

log = logging.getLogger(__name__)

# file name -> (title, columns shown in report.md; None: all)
TABLES = {
    "enumeration.csv": ("Symmetry-distinct orderings per composition", None),
    "stability.csv": ("Harmonic stability (0 K)", ["id", "x", "stable", "min_frequency",
                                                   "n_imaginary", "verdict"]),
    "stabilisation.csv": ("Renormalised phonons from MD", [
        "name", "frames_used", "n_modes_fitted", "n_imaginary_harmonic",
        "n_imaginary_renormalised", "mean_shift_thz", "median_linewidth_thz", "verdict"]),
    "table_I.csv": ("Band gaps (eV), Table I layout (MD)", None),
    "thermal_gap.csv": ("Thermal band-gap renormalisation (eV)", [
        "name", "method", "x", "temperature", "n_frames", "gap_0K", "gap_mean", "gap_sem",
        "delta_gap", "delta_gap_sem", "relative_change"]),
    "gamma_modes_summary.csv": ("Frozen Gamma-mode gap changes", None),
    "metrics.csv": ("Band-gap GNN test metrics", None),
}


def _fmt(df: pd.DataFrame) -> pd.DataFrame:
    return df.apply(lambda c: c.map(lambda v: f"{v:.4g}" if isinstance(v, float) else v))


def run(cfg: DictConfig) -> Path:
    t = cfg.task
    out = Path(t.output_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    lines = [f"# {t.title}", ""]
    n_figures = 0
    for section, source in t.sources.items():
        root = Path(str(source))
        if not root.is_dir():
            raise FileNotFoundError(f"task.sources.{section} = {root}: no such run directory")
        lines += [f"## {section}", "", f"Source: `{root}`", ""]
        for name, (title, columns) in TABLES.items():
            for path in sorted(root.glob(f"**/{name}")):
                rel = path.relative_to(root)
                dest = out / "tables" / f"{section}_{'_'.join(rel.parts)}"
                shutil.copyfile(path, dest)
                df = pd.read_csv(path)
                shown = df[[c for c in columns if c in df]] if columns else df
                lines += [f"### {title}", "", f"`{rel}` ({len(df)} rows)", "",
                          markdown(_fmt(shown)), ""]
        for path in sorted(root.glob("**/*.png")):
            rel = path.relative_to(root)
            dest = out / "figures" / f"{section}_{'_'.join(rel.parts)}"
            shutil.copyfile(path, dest)
            lines += [f"![{rel}](figures/{dest.name})", ""]
            n_figures += 1
    (out / "report.md").write_text("\n".join(lines))
    log.info("report with %d figures: %s", n_figures, out / "report.md")
    return out / "report.md"
