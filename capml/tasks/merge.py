"""``simulate.py task=merge task.input=<file> task.n_shards=<n>``: write the labels of
the shard files made by ``task=label task.shard=i task.n_shards=n`` into the main file,
after checking that they hold its structures and used the same calculator settings."""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from capml.calculators.shards import merge

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict:
    counts = merge(cfg.task.input, int(cfg.task.n_shards))
    log.info("merged %d shards into %s: %s", cfg.task.n_shards, cfg.task.input, counts)
    return counts
