"""Task configs name their own function and entry point; dispatch runs exactly that."""

from __future__ import annotations

import inspect

import pytest
from conftest import CONFIGS
from hydra.utils import get_method
from omegaconf import OmegaConf

from capml.tasks import TASKS, dispatch, task_configs


def test_every_task_config_names_a_run_function_of_capml_tasks():
    files = sorted((CONFIGS / "task").glob("*.yaml"))
    listed = {name for tasks in TASKS.values() for name in tasks}
    assert listed == {f.stem for f in files}  # no task without an entry point, none extra
    for f in files:
        cfg = OmegaConf.load(f)
        assert cfg.name == f.stem and cfg._target_ == f"capml.tasks.{f.stem}.run", f
        run = get_method(cfg._target_)
        assert list(inspect.signature(run).parameters) == ["cfg"], f
    assert "pipeline" in TASKS["simulate"] and "pipeline" in TASKS["analyze"]
    assert "label" in TASKS["simulate"] and "label" not in TASKS["analyze"]


def test_dispatch_refuses_a_task_of_the_other_entry_point(cfg_factory):
    cfg = cfg_factory("analyze", "task=relax", "task.input=x.h5")
    with pytest.raises(ValueError, match=r"task=relax is not a analyze.py task .*"
                                         r"it is a task of simulate.py"):
        dispatch("analyze", cfg)


def test_a_task_config_without_target_or_with_a_bad_entry_is_named(tmp_path):
    (tmp_path / "task").mkdir()
    (tmp_path / "task" / "odd.yaml").write_text("name: odd\nentry: train\n")
    with pytest.raises(ValueError, match=r"odd.yaml: task=odd: entry = 'train'"):
        task_configs(tmp_path)
    cfg = OmegaConf.create({"task": {"name": "odd", "entry": "simulate"}})
    with pytest.raises(ValueError, match="task=odd: the task config names no _target_"):
        dispatch("simulate", cfg)
