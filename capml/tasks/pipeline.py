"""``simulate.py task=pipeline``: several simulate tasks in order, in one job.

``task.stages`` maps stage names to full task configs and ``task.order`` lists the
stages to run. Each stage config is resolved in the context of the whole run
config (so it can name an earlier stage's outputs, e.g.
``${task.stages.enumerate.output_dir}/ground_states.h5``) and then run as
``task`` of a copy of the run config. ``experiment=demo`` and ``experiment=paper``
chain enumerate -> phonons -> md this way, and analyze.py's ``experiment=demo_analysis``
renormalised_phonons -> thermal_gap -> gamma_modes -> report.
"""

from __future__ import annotations

import copy
import logging
import time

from omegaconf import DictConfig, OmegaConf, open_dict

from capml.tasks import dispatch, entries_of

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict:
    order = list(cfg.task.order)
    stages = cfg.task.stages
    missing = [s for s in order if s not in stages]
    if not order or missing:
        raise ValueError(f"task.order = {order}: expected a non-empty list of names from "
                         f"task.stages ({sorted(stages)})")
    results = {}
    for k, name in enumerate(order):
        stage = OmegaConf.to_container(stages[name], resolve=True)
        if stage.get("name") in (None, "pipeline"):
            raise ValueError(f"task.stages.{name}: expected a task config with 'name' "
                             f"(not a pipeline), got name = {stage.get('name')!r}")
        sub = copy.deepcopy(cfg)
        with open_dict(sub):
            sub.task = stage
        entry = entries_of(stage)[0]
        log.info("pipeline stage %d/%d: %s (%s.py task=%s)", k + 1, len(order), name, entry,
                 stage["name"])
        t0 = time.perf_counter()
        results[name] = dispatch(entry, sub)
        log.info("pipeline stage %s done in %.1f s", name, time.perf_counter() - t0)
    return results
