"""``simulate.py task=split``: store seeded, stratified train/val/test ids in a data file.

Every row gets ``meta/split`` (stratified by composition x and sampling method;
``group_by: ordering`` keeps the cells of one halide ordering in one split), so that
training and evaluation anywhere use the same held-out cells. Rows not yet labeled
get a split too, so labeling more later does not move any cell between splits; rows
appended later (``task=generate task.append=true``) get theirs on the next run, and the
rows that had one keep it (``task.reassign=true`` recomputes all).
"""

from __future__ import annotations

import logging

import numpy as np
from omegaconf import DictConfig

from capml.data.splits import write_splits
from capml.structures import System

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> np.ndarray:
    t = cfg.task
    system = System.from_config(cfg.system) if t.group_by == "ordering" else None
    labels = write_splits(t.input, seed=int(t.seed), fractions=tuple(float(f) for f in t.fractions),
                          system=system, group_by=t.group_by, reassign=bool(t.reassign))
    names, counts = np.unique(labels, return_counts=True)
    log.info("%s: stored split %s", t.input, dict(zip(names.tolist(), counts.tolist())))
    return labels
