"""Sweeps: ranking finished runs; Hydra multiruns (basic grid, Optuna) in subprocesses (slow)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pandas as pd
import pytest
from conftest import ROOT
from helpers.gnn_data import labeled_file


@pytest.fixture(scope="module")
def cells_file(request, tmp_path_factory):
    return labeled_file(request.config.cache.mkdir("capml-gnn"),
                        tmp_path_factory.mktemp("gnn") / "cells.h5")


def _job(cfg_factory, tmp_path, num, cells_file, *overrides):
    from capml.training.run import run

    cfg = cfg_factory("train", f"paths.output_dir={tmp_path / 'sweep' / str(num)}",
                      f"data.low_level={cells_file}", "data.min_labeled=5", "logger=none",
                      "stage=pretrain", *overrides)
    return run(cfg)


def test_rank_sweep_orders_jobs_by_the_objective(cfg_factory, tmp_path, cells_file):
    from capml.tasks import dispatch

    values = [_job(cfg_factory, tmp_path, k, cells_file, "stage.steps.pretrain.max_epochs=2",
                   f"model.hidden={h}", "model.lr=0.01") for k, h in enumerate((8, 32))]
    failed = tmp_path / "sweep" / "2"
    failed.mkdir()
    (failed / "metrics.json").write_text(json.dumps(
        {"status": "failed", "objective": math.inf, "overrides": ["model.hidden=1"],
         "error": "Diverged: non-finite training loss"}))
    cfg = cfg_factory("analyze", "task=rank_sweep", f"task.dir={tmp_path / 'sweep'}")
    out = dispatch("analyze", cfg)
    table = pd.read_csv(out)
    assert list(table["rank"]) == [1, 2, 3]
    ok = table[table.status == "ok"]
    assert list(ok.objective) == sorted(values)
    assert str(table.iloc[-1].job) == "2" and table.iloc[-1].status == "failed"
    assert "test/mae" in table and ok["test/mae"].notna().all()
    by_test = dispatch("analyze", cfg_factory("analyze", "task=rank_sweep",
                                              f"task.dir={tmp_path / 'sweep'}",
                                              "task.metric=test/mae"))
    assert sorted(pd.read_csv(by_test)["test/mae"].dropna()) == \
        list(pd.read_csv(by_test)["test/mae"].dropna())


def test_rank_sweep_errors_are_named(cfg_factory, tmp_path):
    from capml.tasks import dispatch

    with pytest.raises(FileNotFoundError, match="no such sweep directory"):
        dispatch("analyze", cfg_factory("analyze", "task=rank_sweep",
                                        f"task.dir={tmp_path / 'none'}"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no train.py job metrics"):
        dispatch("analyze", cfg_factory("analyze", "task=rank_sweep",
                                        f"task.dir={tmp_path / 'empty'}"))


def _train(*args, cwd=ROOT):
    env = {**os.environ, "CAPML_ROOT": str(ROOT), "WANDB_MODE": "offline"}
    proc = subprocess.run([sys.executable, "train.py", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.mark.slow
def test_smoke_sweep_multirun_and_ranking(tmp_path, cells_file):
    """`train.py -m sweep=smoke`: 4 jobs, each with its resolved config and metrics; one
    extra failing job (freezing more layers than exist) returns inf and the sweep goes on."""
    sweep = tmp_path / "multirun"
    _train("-m", "sweep=smoke", f"data.low_level={cells_file}", "data.min_labeled=5",
           "model.architecture.n_layers=2,5", "stage.steps.pretrain.freeze_layers=3",
           "model.hidden=16", f"hydra.sweep.dir={sweep}")
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert len(jobs) == 4  # conv {graph, cg} x n_layers {2, 5}
    status = {}
    for job in jobs:
        assert (job / ".hydra" / "config.yaml").exists()
        doc = json.loads((job / "metrics.json").read_text())
        status[job.name] = (doc["status"], doc["objective"])
    assert sorted(s for s, _ in status.values()) == ["failed", "failed", "ok", "ok"]
    assert all(math.isinf(v) == (s == "failed") for s, v in status.values())
    env = {**os.environ, "CAPML_ROOT": str(ROOT)}
    proc = subprocess.run([sys.executable, "analyze.py", "task=rank_sweep", f"task.dir={sweep}",
                           f"hydra.run.dir={tmp_path / 'rank'}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    table = pd.read_csv(tmp_path / "rank" / "ranking.csv")
    assert list(table.status) == ["ok", "ok", "failed", "failed"]


@pytest.mark.slow
def test_optuna_sweep_runs_trials(tmp_path, cells_file):
    sweep = tmp_path / "optuna"
    _train("-m", "sweep=optuna", "hydra.sweeper.n_trials=2", "stage.steps.pretrain.max_epochs=2",
           f"data.low_level={cells_file}", "data.min_labeled=5", f"hydra.sweep.dir={sweep}")
    result = (sweep / "optimization_results.yaml").read_text()
    assert "best_params" in result and "model.lr" in result
    values = [json.loads((sweep / str(k) / "metrics.json").read_text())["objective"]
              for k in range(2)]
    assert f"best_value: {min(values)}" in result


@pytest.mark.slow
def test_wandb_offline_logging(tmp_path, cells_file):
    """logger=wandb (offline): one W&B run per step with parity images and the best
    checkpoint as an artifact, grouped by the run directory."""
    run_dir = tmp_path / "run"
    _train(f"data.low_level={cells_file}", "data.min_labeled=5", "stage=pretrain",
           "stage.steps.pretrain.max_epochs=2", "logger=wandb", f"hydra.run.dir={run_dir}")
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    images = {p.name.split("_")[0] for p in runs[0].glob("files/media/images/pretrain/*.png")}
    assert {"parity", "errors"} <= images
    record = next(runs[0].glob("run-*.wandb")).read_bytes()
    assert b"gnn-pretrain-" in record and b"val/mae_best" in record
    assert run_dir.name.encode() in record  # the group


def test_rank_sweep_lists_jobs_that_died_and_failed_with_their_errors(cfg_factory, tmp_path,
                                                                      cells_file, capsys):
    """A job whose data file is missing stops the sweep but leaves its record; a job that
    was killed leaves only .hydra/: both are ranked last and listed with the reason."""
    from conftest import compose_train_with_hydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from capml.tasks import dispatch
    from capml.training.run import objective

    _job(cfg_factory, tmp_path, 0, cells_file, "stage.steps.pretrain.max_epochs=1")
    missing = tmp_path / "moved.h5"
    cfg = cfg_factory("train", f"paths.output_dir={tmp_path / 'sweep' / '1'}",
                      f"data.low_level={missing}", "stage=pretrain")
    hydra_cfg = compose_train_with_hydra("hydra.mode=MULTIRUN")
    with open_dict(hydra_cfg):
        hydra_cfg.hydra.job.num = 1
    HydraConfig.instance().set_config(hydra_cfg)
    try:
        with pytest.raises(FileNotFoundError, match="moved.h5"):
            objective(cfg)
    finally:
        HydraConfig.instance().cfg = None
    killed = tmp_path / "sweep" / "2" / ".hydra"
    killed.mkdir(parents=True)
    (killed / "overrides.yaml").write_text("- model.hidden=128\n")
    out = dispatch("analyze", cfg_factory("analyze", "task=rank_sweep",
                                          f"task.dir={tmp_path / 'sweep'}"))
    table = pd.read_csv(out)
    assert list(table.job.astype(str)) == ["0", "1", "2"]
    assert list(table.status) == ["ok", "failed", "died"]
    assert "moved.h5" in table.error[1] and "no metrics.json" in table.error[2]
    printed = capsys.readouterr().out
    assert "2 of 3 jobs did not finish" in printed
    assert "job 2 (died; model.hidden=128): no metrics.json" in printed
