"""``--help`` text of the entry points: the task list, read from the task configs.

Registered as the OmegaConf resolver ``capml_tasks`` (used in the ``hydra.help.template``
of configs/simulate.yaml and configs/analyze.yaml), so the help lists every task a
config declares, with the first comment line of its file, and never goes stale.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf


def task_summaries(entry: str, config_dir=None) -> str:
    """Lines ``  <task>  <first comment line of configs/task/<task>.yaml>``."""
    from capml.tasks import task_configs

    root = Path(config_dir or Path(os.environ["CAPML_ROOT"]) / "configs")
    names = sorted(task_configs(root)[entry])
    width = max(map(len, names), default=0)
    lines = []
    for name in names:
        first = (root / "task" / f"{name}.yaml").read_text().splitlines()[:1]
        about = first[0].lstrip("# ").rstrip(":") if first and first[0].startswith("#") else ""
        lines.append(f"  {name.ljust(width)}  {about}".replace("$", "$$"))  # Template escape
    return "\n".join(lines)


def register() -> None:
    if not OmegaConf.has_resolver("capml_tasks"):
        OmegaConf.register_new_resolver("capml_tasks", task_summaries)
