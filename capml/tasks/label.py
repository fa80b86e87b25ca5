"""``simulate.py task=label calculator=...``: fill in reference labels, resumably."""

from __future__ import annotations

import logging

from omegaconf import DictConfig, OmegaConf

from capml.calculators.labeling import label_file

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict:
    t = cfg.task
    counts = label_file(t.input, t.output, OmegaConf.to_container(cfg.calculator, resolve=True),
                        n_jobs=int(t.n_jobs), retry_failed=t.retry_failed,
                        limit=t.limit, threads_per_job=t.threads_per_job,
                        shuffle_seed=int(cfg.seed) if t.shuffle else None)
    log.info("labeling %s: %s", t.output, counts)
    return counts
