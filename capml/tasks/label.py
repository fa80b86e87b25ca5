"""``simulate.py task=label calculator=...``: fill in reference labels, resumably.

``task.shard=i task.n_shards=n`` labels shard i into its own file (see
``capml.calculators.shards``; ``task=merge`` joins them). A run in which every structure
it labeled failed raises (non-zero exit) with a summary of the reasons.
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig, OmegaConf

from capml.calculators.labeling import failure_summary, label_file
from capml.calculators.reference import LabelingFailed
from capml.calculators.shards import shard_path

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict:
    t = cfg.task
    n_shards = int(t.get("n_shards", 1))
    shard = (int(t.shard), n_shards) if n_shards > 1 else None
    output = shard_path(t.output, *shard) if shard else t.output
    counts = label_file(t.input, output, OmegaConf.to_container(cfg.calculator, resolve=True),
                        n_jobs=int(t.n_jobs), retry_failed=t.retry_failed,
                        limit=t.limit, threads_per_job=t.threads_per_job,
                        shuffle_seed=int(cfg.seed) if t.shuffle else None, shard=shard)
    log.info("labeling %s: %s", output, counts)
    if counts["failed"] and not counts["ok"]:
        raise LabelingFailed(f"{output}: all {counts['failed']} structures labeled in this run "
                             f"failed with calculator level '{cfg.calculator.get('level')}': "
                             f"{failure_summary(output)}")
    if counts["failed"]:
        log.warning("%s: %d of %d structures failed: %s", output, counts["failed"],
                    counts["failed"] + counts["ok"], failure_summary(output))
    return counts
