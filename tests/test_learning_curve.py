"""Learning-curve summary: paired seeds, standard errors, verdicts, and the task's I/O."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from capml.analysis.learning_curve import summarise, verdict
from capml.tasks.learning_curve import collect


def _rows(n_train, seeds, tuned, scratch):
    return pd.DataFrame(
        [{"n_train": n_train, "seed": s, "step": "finetune", "test_mae_eV": a}
         for s, a in zip(seeds, tuned)]
        + [{"n_train": n_train, "seed": s, "step": "scratch", "test_mae_eV": b}
           for s, b in zip(seeds, scratch)])


def test_paired_difference_sees_an_effect_that_the_curves_spread_hides():
    # Seeds move both steps together by +-20 meV; pretraining lowers the error by 5 meV.
    seed_offset = np.array([0.0, 0.02, -0.02, 0.01])
    rows = pd.concat([_rows(20, range(4), 0.10 + seed_offset - 0.005, 0.10 + seed_offset),
                      _rows(80, range(4), 0.05 + seed_offset, 0.05 + seed_offset)])
    s = summarise(rows).set_index("n_train")
    assert s.loc[20, "difference_mae_eV"] == pytest.approx(-0.005)
    assert s.loc[20, "difference_sem_eV"] == pytest.approx(0.0, abs=1e-12)
    assert s.loc[20, "finetune_sem_eV"] == pytest.approx(seed_offset.std(ddof=1) / 2)
    assert s.loc[20, "pretraining"] == "helps"
    assert s.loc[80, "pretraining"] == "no measurable effect"
    assert list(s["n_seeds"]) == [4, 4]


def test_verdict_thresholds():
    assert verdict(-0.01, 0.004) == "helps"
    assert verdict(0.01, 0.004) == "hurts"
    assert verdict(-0.006, 0.004) == "no measurable effect"
    assert verdict(-0.1, float("nan")) == "one seed: no error bar"


def test_collect_reads_jobs_and_leaves_out_failed_ones(tmp_path, caplog):
    for job, (seed, n, status) in enumerate([(0, 10, "ok"), (1, 10, "ok"), (2, 10, "failed")]):
        d = tmp_path / str(job)
        (d / ".hydra").mkdir(parents=True)
        (d / ".hydra" / "config.yaml").write_text(f"seed: {seed}\n")
        steps = {name: {"name": name, "level": level, "counts": {"train": n if level ==
                 "high_level" else 300, "val": 5, "test": 14},
                 "metrics": {"test/mae": 0.05 + 0.01 * seed, "test/rmse": 0.07}}
                 for name, level in (("pretrain", "low_level"), ("finetune", "high_level"),
                                     ("scratch", "high_level"))}
        doc = {"status": status, "steps": steps if status == "ok" else {}}
        if status != "ok":
            doc["error"] = "FileNotFoundError: missing.h5"
        (d / "metrics.json").write_text(json.dumps(doc))
    rows = collect(tmp_path)
    assert sorted(rows["job"].unique()) == ["0", "1"]
    assert set(rows["step"]) == {"finetune", "scratch"}  # the low-level step is not a point
    assert (rows["n_train"] == 10).all()
    assert "2: FileNotFoundError: missing.h5" in caplog.text
    with pytest.raises(FileNotFoundError, match="no such multirun directory"):
        collect(tmp_path / "nope")


def test_step_train_size_subsamples_the_high_level_steps_only(cfg_factory, tmp_path, request):
    from helpers.gnn_data import labeled_file

    from capml.training.run import run

    path = labeled_file(request.config.cache.mkdir("capml-gnn"), tmp_path / "cells.h5")
    cfg = cfg_factory("train", "experiment=learning_curve", f"data.low_level={path}",
                      f"data.high_level={path}", "data.min_labeled=5", "logger=none",
                      "trainer=debug", "high_level_train_size=6",
                      f"stage.shared_dir={tmp_path}/shared")
    run(cfg)
    counts = {k: v["counts"] for k, v in
              json.loads((tmp_path / "metrics.json").read_text())["steps"].items()}
    assert counts["finetune"]["train"] == counts["scratch"]["train"] == 6
    assert counts["pretrain"]["train"] > 6  # the low-level step keeps its whole split
    assert counts["finetune"]["test"] == counts["pretrain"]["test"]  # test split untouched


def test_jobs_that_differ_in_later_steps_share_one_pretraining(tmp_path, request, caplog):
    """Two learning-curve jobs (other training-set sizes, same seed) train the pretraining
    once: both link the same folder and fine-tune from its checkpoint; another seed gets
    its own."""
    import logging

    from conftest import compose_cfg
    from helpers.gnn_data import labeled_file

    from capml.training.run import run

    path = labeled_file(request.config.cache.mkdir("capml-gnn"), tmp_path / "cells.h5")
    shared = tmp_path / "shared"

    def job(name, *overrides):
        cfg = compose_cfg("train", ["experiment=learning_curve", f"data.low_level={path}",
                                    f"data.high_level={path}", "data.min_labeled=5",
                                    "logger=none", "trainer=debug",
                                    f"stage.shared_dir={shared}", *overrides], tmp_path / name)
        run(cfg)
        return json.loads((tmp_path / name / "metrics.json").read_text())["steps"]

    first = job("a", "high_level_train_size=6")
    with caplog.at_level(logging.INFO, logger="capml.training.stages"):
        second = job("b", "high_level_train_size=8")
    assert "step pretrain: finished earlier" in caplog.text
    a, b = (tmp_path / "a" / "pretrain").resolve(), (tmp_path / "b" / "pretrain").resolve()
    assert a == b and a.parent == shared
    assert first["pretrain"]["checkpoint"] == second["pretrain"]["checkpoint"]
    assert second["finetune"]["extra"]["init_checkpoint"] == first["pretrain"]["checkpoint"]
    assert (first["finetune"]["counts"]["train"], second["finetune"]["counts"]["train"]) == (6, 8)
    job("c", "high_level_train_size=6", "seed=1")
    assert (tmp_path / "c" / "pretrain").resolve() != a


def test_shared_steps_must_name_steps_and_a_folder(cfg_factory, tmp_path, request):
    from helpers.gnn_data import labeled_file

    from capml.training.run import run_steps

    path = labeled_file(request.config.cache.mkdir("capml-gnn"), tmp_path / "cells.h5")
    base = ("experiment=learning_curve", f"data.low_level={path}", f"data.high_level={path}",
            "data.min_labeled=5", "logger=none", "trainer=debug")
    with pytest.raises(ValueError, match=r"no step named \['pretrian'\]"):
        run_steps(cfg_factory("train", *base, f"stage.shared_dir={tmp_path}",
                              "stage.shared_steps=[pretrian]"))
    with pytest.raises(ValueError, match="needs stage.shared_dir"):
        run_steps(cfg_factory("train", *base, "stage.shared_dir=null"))
