"""``simulate.py task=generate``: unlabeled displaced supercells for reference calculations
(``capml.sampling.generate``), written to or appended to ``task.output``."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from capml import data as store
from capml.sampling.generate import METHODS, generate, load_end_members
from capml.structures import System
from capml.structures.selection import compositions_of

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> Path:
    t = cfg.task
    system = System.from_config(cfg.system)
    comps = compositions_of(system, t.compositions)
    needs_fc = any(s.get("method") == "phonon" for s in t.samples)
    ends = load_end_members(cfg.system.get("force_constants")) if needs_fc else None
    out = Path(t.output)
    if out.exists() and not t.append:  # it may hold hours of labels
        raise FileExistsError(f"{out} exists: task.append=true adds structures to it; "
                              "choose another task.output to start a new file")
    first = store.count(out) if out.exists() else 0
    data = generate(system, t.samples, comps, int(cfg.seed), end_members=ends,
                    cutoff_frequency=float(t.cutoff_frequency), id_prefix=str(t.id_prefix),
                    first_index=first)
    config = OmegaConf.to_yaml(cfg, resolve=True)
    if first:  # the file keeps its first config; each append records its own
        store.append(out, data)
        store.set_attrs(out, **{f"config_append_{first}": config})
    else:
        out = store.write(out, data, config=config)
    counts = {m: int(np.sum(data.meta["method"] == m)) for m in METHODS}
    log.info("%s %d structures to %s (%s) at x = %s", "appended" if first else "wrote",
             len(data), out, counts, [round(x, 4) for x in comps])
    return out
