"""Tasks behind the entry points: each ``run(cfg)`` reads the files its config
names, calls the library and writes its outputs. ``dispatch`` maps
``cfg.task.name`` to the task of the calling entry point."""

from __future__ import annotations

import importlib

TASKS = {
    "simulate": {
        "generate": "capml.tasks.generate",
        "force_constants": "capml.tasks.force_constants",
        "label": "capml.tasks.label",
        "merge": "capml.tasks.merge",
        "split": "capml.tasks.split",
        "export_inputs": "capml.tasks.export_inputs",
        "enumerate": "capml.tasks.enumerate",
        "relax": "capml.tasks.relax",
        "phonons": "capml.tasks.phonons",
        "md": "capml.tasks.md",
        "pipeline": "capml.tasks.pipeline",
    },
    "analyze": {
        "dataset_report": "capml.tasks.dataset_report",
        "mlip_parity": "capml.tasks.mlip_parity",
        "rank_sweep": "capml.tasks.rank_sweep",
        "renormalised_phonons": "capml.tasks.renormalised_phonons",
        "thermal_gap": "capml.tasks.thermal_gap",
        "gamma_modes": "capml.tasks.gamma_modes",
        "report": "capml.tasks.report",
        "pipeline": "capml.tasks.pipeline",
    },
    "train": {},
}


def dispatch(entry: str, cfg):
    """Run the task ``cfg.task.name`` of entry point ``entry``."""
    name = cfg.task.name
    if name not in TASKS[entry]:
        owner = [e for e, tasks in TASKS.items() if name in tasks]
        hint = f"; it is a task of {owner[0]}.py" if owner else ""
        raise ValueError(f"task={name} is not a {entry}.py task (have "
                         f"{sorted(TASKS[entry])}){hint}")
    return importlib.import_module(TASKS[entry][name]).run(cfg)
