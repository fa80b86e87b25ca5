"""Tasks behind the entry points: each ``run(cfg)`` reads the files its config
names, calls the library and writes its outputs.

Every task config (``configs/task/<name>.yaml``) names its function (``_target_``)
and the entry point(s) that run it (``entry``); ``dispatch`` calls it, and
``TASKS`` lists the tasks of each entry point from those files.
"""

from __future__ import annotations

import os
from pathlib import Path

from hydra.utils import get_method
from omegaconf import OmegaConf

ENTRIES = ("simulate", "analyze")


def entries_of(task_cfg) -> list[str]:
    """The entry points a task config declares (``entry``: a name or a list)."""
    entry = task_cfg.get("entry")
    entries = list(entry) if OmegaConf.is_list(entry) or isinstance(entry, list) else [entry]
    bad = [e for e in entries if e not in ENTRIES]
    if bad or not entries:
        raise ValueError(f"task={task_cfg.get('name')}: entry = {entry!r}, expected one or a "
                         f"list of {ENTRIES}")
    return entries


def task_configs(config_dir=None) -> dict[str, dict[str, str]]:
    """{entry: {task name: _target_}} of the task configs in ``config_dir``/task."""
    root = Path(config_dir or Path(os.environ.get("CAPML_ROOT", Path(__file__).parents[2]))
                / "configs")
    out = {e: {} for e in ENTRIES}
    for path in sorted((root / "task").glob("*.yaml")):
        cfg = OmegaConf.load(path)
        try:
            entries = entries_of(cfg)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from err
        for entry in entries:
            out[entry][path.stem] = str(cfg.get("_target_"))
    return out


TASKS = task_configs()


def dispatch(entry: str, cfg):
    """Run the task ``cfg.task`` (its ``_target_``) for entry point ``entry``."""
    task = cfg.task
    name, target = task.get("name"), task.get("_target_")
    if not target:
        raise ValueError(f"task={name}: the task config names no _target_ (the function "
                         "that runs it, e.g. capml.tasks.relax.run)")
    entries = entries_of(task)
    if entry not in entries:
        raise ValueError(f"task={name} is not a {entry}.py task (have {sorted(TASKS[entry])}); "
                         f"it is a task of {entries[0]}.py")
    return get_method(str(target))(cfg)
