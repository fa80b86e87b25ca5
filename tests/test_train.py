"""Band-gap GNN training: configs, the two-stage pipeline, checkpoints, scalers, errors.

Data: ten undisplaced 40-atom cells with real GFN2-xTB gaps (tests/helpers/gnn_data.py).
"""

from __future__ import annotations

import json
import math
import shutil

import h5py
import numpy as np
import pandas as pd
import pytest
from conftest import compose_train_with_hydra
from helpers.gnn_data import labeled_file
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from capml import data as store
from capml.data import DataError

TINY = ["data.min_labeled=5", "logger=none"]


@pytest.fixture(scope="module")
def cells_file(request, tmp_path_factory):
    return labeled_file(request.config.cache.mkdir("capml-gnn"),
                        tmp_path_factory.mktemp("gnn") / "cells.h5")


@pytest.fixture
def data_file(cells_file, tmp_path):
    """A private copy (tests may edit it)."""
    return shutil.copyfile(cells_file, tmp_path / "cells.h5")


def _train_cfg(cfg_factory, path, *overrides):
    return cfg_factory("train", f"data.low_level={path}", f"data.high_level={path}", *TINY,
                       *overrides)


# ------------------------------------------------------------------- configs
@pytest.mark.parametrize("arch,n_layers,pooling,output", [
    ("model1", 3, "max", "sigmoid"), ("model2", 3, "mean", "sigmoid"),
    ("model3", 3, "max", "relu"), ("model4", 3, "mean", "relu"),
    ("model5", 2, "max", "sigmoid"), ("model6", 4, "max", "sigmoid")])
def test_the_six_paper_architectures_compose(cfg_factory, arch, n_layers, pooling, output):
    from capml.training.stages import net_config

    cfg = cfg_factory("train", f"model/architecture={arch}")
    net = net_config(cfg.model)
    assert (net["n_layers"], net["pooling"], net["output"]) == (n_layers, pooling, output)
    assert net["conv"] == "graph" and cfg.model.kind == "gnn"


def test_every_config_group_composes(cfg_factory):
    paper = cfg_factory("train", "model=gnn_paper", "stage=paper")
    assert paper.model.architecture.name == "model5"
    assert (paper.model.hidden, paper.model.dropout, paper.model.lr) == (64, 0.4, 1e-4)
    assert [s.max_epochs for s in paper.stage.steps.values()] == [600, 300, 300]
    assert list(cfg_factory("train").stage.steps) == ["pretrain", "finetune", "scratch"]
    for stage in ("pretrain", "scratch"):
        assert list(cfg_factory("train", f"stage={stage}").stage.steps) == [stage]
    ft = cfg_factory("train", "stage=finetune", "stage.checkpoint=/x/best.ckpt")
    assert ft.stage.steps.finetune.init_from == "/x/best.ckpt"
    for trainer in ("default", "gpu", "debug"):
        assert cfg_factory("train", f"trainer={trainer}").trainer._target_.endswith("Trainer")
    for logger in ("csv", "wandb"):
        assert "loggers" in cfg_factory("train", f"logger={logger}").logger._target_
    assert not cfg_factory("train", "logger=none").logger
    assert cfg_factory("train", "callbacks=none").callbacks == {}
    assert cfg_factory("train").data.cutoff == 5.5
    assert cfg_factory("train", "model=mace").model.kind == "mace"  # train.py's MACE branch


def test_sweep_configs_compose():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    grid = compose_train_with_hydra("sweep=paper_grid")
    params = grid.hydra.sweeper.params
    parser = OverridesParser.create()
    sizes = [len(list(o.sweep_string_iterator()))
             for o in parser.parse_overrides([f"{k}={v}" for k, v in params.items()])]
    assert math.prod(sizes) == 480
    assert list(grid.stage.steps) == ["pretrain"]
    assert grid.stage.steps.pretrain.max_epochs == 600 and grid.data.batch_size == 128
    smoke = compose_train_with_hydra("sweep=smoke")
    assert smoke.stage.steps.pretrain.max_epochs <= 5
    optuna = compose_train_with_hydra("sweep=optuna")
    assert optuna.hydra.sweeper._target_.endswith("OptunaSweeper")
    assert optuna.hydra.sweeper.direction == "minimize"
    assert set(optuna.hydra.sweeper.params) >= {"model.lr", "model.hidden", "model.dropout",
                                                 "model.architecture.n_layers", "model.conv",
                                                 "model.architecture.pooling"}


@pytest.mark.parametrize("launcher,target", [("joblib", "JoblibLauncher"),
                                             ("submitit_slurm", "SlurmLauncher")])
def test_launchers_compose(launcher, target):
    cfg = compose_train_with_hydra("sweep=smoke", f"hydra/launcher={launcher}")
    assert cfg.hydra.launcher._target_.endswith(target)


# ------------------------------------------------------------------ training
def test_two_stage_pipeline_fast_dev_run(cfg_factory, data_file, tmp_path, capsys):
    from capml.training.run import run

    cfg = _train_cfg(cfg_factory, data_file, "trainer=debug", "data.batch_size=4")
    value = run(cfg)
    out = tmp_path
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["status"] == "ok" and list(doc["steps"]) == ["pretrain", "finetune", "scratch"]
    assert doc["objective"] == pytest.approx(value)
    for step in ("pretrain", "finetune", "scratch"):
        for name in ("parity_train.png", "parity_test.png", "errors.png", "predictions.csv",
                     "metrics.json", "checkpoints"):
            assert (out / step / name).exists(), f"{step}/{name} missing"
        # fast_dev_run trains on one batch, but every structure is predicted and scored
        counts = doc["steps"][step]["counts"]
        assert len(pd.read_csv(out / step / "predictions.csv")) == sum(counts.values())
    table = pd.read_csv(out / "metrics.csv")
    assert list(table.step) == ["pretrain", "finetune", "scratch"]
    assert list(table.init_from) == ["-", "pretrain", "-"]
    printed = capsys.readouterr().out
    assert "test_mae_eV" in printed and "pretraining" in printed


def test_best_checkpoint_and_prediction_round_trip(cfg_factory, data_file, tmp_path):
    """The kept checkpoint is the validation-best epoch, and the checkpoint alone
    reproduces the training pipeline's predictions for the structures of the file."""
    from capml import predict_band_gap
    from capml.training.run import run

    cfg = _train_cfg(cfg_factory, data_file, "stage=pretrain",
                     "stage.steps.pretrain.max_epochs=12", "model.lr=0.01", "logger=csv")
    run(cfg)
    step = tmp_path / "pretrain"
    log = pd.read_csv(next(step.glob("version_*/metrics.csv")))
    per_epoch = log["val/mae"].dropna()
    result = json.loads((step / "metrics.json").read_text())
    assert result["metrics"]["val/mae_best"] == pytest.approx(per_epoch.min(), rel=1e-5)
    assert len(per_epoch) == 12
    pred = pd.read_csv(step / "predictions.csv")
    val = pred[pred.split == "val"]
    assert np.mean(np.abs(val.predicted_band_gap - val.band_gap)) == pytest.approx(
        per_epoch.min(), abs=1e-5)
    # round trip: checkpoint -> predict_band_gap on ase.Atoms read from the data file
    atoms = store.read(data_file).to_atoms()
    by_id = {a.info["id"]: a for a in atoms}
    ckpt = result["checkpoint"]
    batched = predict_band_gap(ckpt, [by_id[i] for i in pred.id])
    assert np.allclose(batched, pred.predicted_band_gap, atol=1e-5)
    single = np.concatenate([predict_band_gap(ckpt, [by_id[i]], batch_size=1) for i in pred.id])
    assert np.allclose(single, batched, atol=1e-5)
    assert np.array_equal(predict_band_gap(ckpt, [by_id[i] for i in pred.id]), batched)


def test_finetune_starts_from_the_pretrained_weights(cfg_factory, data_file, tmp_path):
    """Frozen first layer: after fine-tuning it still equals the pretrained one; the
    feature scalers are the pretrained model's, the target scaler is refitted."""
    import torch

    from capml.training.module import BandGapModule
    from capml.training.run import run

    cfg = _train_cfg(cfg_factory, data_file, "stage.steps.pretrain.max_epochs=3",
                     "stage.steps.finetune.max_epochs=3", "stage.steps.scratch.max_epochs=1",
                     "stage.steps.finetune.freeze_layers=1", "model.lr=0.01")
    run(cfg)
    pre, fine = (BandGapModule.load_from_checkpoint(tmp_path / f"{s}/checkpoints/best.ckpt",
                                                    weights_only=True)
                 for s in ("pretrain", "finetune"))
    for k, v in pre.net.convs[0].state_dict().items():
        assert torch.equal(v, fine.net.convs[0].state_dict()[k])
    for k, v in pre.net.convs[1].state_dict().items():  # trained on
        assert not torch.equal(v, fine.net.convs[1].state_dict()[k])
    assert torch.equal(pre.net.norms[0].running_mean, fine.net.norms[0].running_mean)
    assert fine.hparams.scalers["node"] == pre.hparams.scalers["node"]
    assert fine.hparams.freeze_layers == 1


# ------------------------------------------------------------------- scalers
def _datamodule(path, **kwargs):
    from omegaconf import OmegaConf

    from capml.graphs import element_table
    from capml.training.datamodule import BandGapDataModule

    split = OmegaConf.create({"use_stored": True, "fractions": [0.6, 0.2, 0.2], "seed": 0,
                              "group_by": None})
    dm = BandGapDataModule(path, element_table=element_table(), split=split, min_labeled=5,
                           graph_cache=False, **kwargs)
    dm.setup()
    return dm


def test_scalers_are_fitted_on_the_training_split_only(data_file):
    dm = _datamodule(data_file)
    gap = store.read_label(data_file, "band_gap")
    train = dm.labels == "train"
    assert dm.scalers.target.minimum[0] == gap[train].min()
    assert dm.scalers.target.maximum[0] == gap[train].max()
    assert gap[~train].min() < gap[train].min() or gap[~train].max() > gap[train].max(), \
        "test data should reach outside the train range for this check to bite"
    # move every val/test gap far outside: nothing fitted may change
    held_out = np.flatnonzero(~train)
    store.update_rows(data_file, held_out, labels={"band_gap": [50.0] * len(held_out)})
    leaked = _datamodule(data_file)
    assert np.array_equal(leaked.labels, dm.labels)
    assert leaked.scalers == dm.scalers
    # a training gap does move the target scaler
    store.update_rows(data_file, [np.flatnonzero(train)[0]], labels={"band_gap": [9.0]})
    assert _datamodule(data_file).scalers.target.maximum[0] == 9.0


def test_finetune_keeps_feature_scalers_and_refits_or_keeps_the_target_scaler(data_file):
    own = _datamodule(data_file).scalers
    given = {"node": {"minimum": [1.0, 0.5, 1.0, 0.2], "maximum": [60.0, 3.5, 140.0, 2.0]},
             "edge": {"minimum": [2.0], "maximum": [5.5]},
             "target": {"minimum": [0.0], "maximum": [10.0]}}
    keep = _datamodule(data_file, scalers=given, refit_target=False).scalers
    refit = _datamodule(data_file, scalers=given, refit_target=True).scalers
    assert keep.to_dict() == given
    assert refit.node.to_dict() == given["node"] and refit.edge.to_dict() == given["edge"]
    assert refit.target == own.target


def test_unlabeled_rows_are_dropped_and_counted(data_file, caplog):
    store.update_rows(data_file, [0, 1], labels={"band_gap": [np.nan, np.nan]})
    with caplog.at_level("INFO"):
        dm = _datamodule(data_file)
    assert sum(len(d) for d in dm.datasets.values()) == 8
    assert dm.n_dropped == 2 and "2 dropped" in caplog.text


# -------------------------------------------------------------------- splits
def test_stored_splits_are_used_and_partial_ones_rejected(data_file):
    from capml.data.splits import write_splits

    labels = write_splits(data_file, seed=3, fractions=(0.6, 0.2, 0.2))
    dm = _datamodule(data_file)
    assert dm.split_source == "stored"
    assert np.array_equal(dm.labels, labels)
    with h5py.File(data_file, "a") as f:
        f["meta/split"][0] = ""
    with pytest.raises(DataError, match=r"meta/split is set for 9 of 10"):
        _datamodule(data_file)


def test_holdout_by_ordering_keeps_symmetry_equivalent_cells_together(data_file, system):
    """With group_by=ordering, cells whose halide orderings map onto each other by a
    supercell symmetry (here: the end members, one ordering each) share a split."""
    from omegaconf import OmegaConf

    from capml.data.splits import ordering_groups
    from capml.graphs import element_table
    from capml.training.datamodule import BandGapDataModule

    extra = store.read(data_file).subset([0, 8])  # x = 0 and x = 1 again, other ids
    extra.meta["id"] = np.array(["t100", "t108"], dtype=object)
    store.append(data_file, extra)
    split = OmegaConf.create({"use_stored": True, "fractions": [0.6, 0.2, 0.2], "seed": 0,
                              "group_by": "ordering"})
    dm = BandGapDataModule(data_file, element_table=element_table(), split=split,
                           min_labeled=5, graph_cache=False, system=system)
    dm.setup()
    keys = ordering_groups(dm.data, system)
    for key in set(keys):
        assert len(set(dm.labels[keys == key])) == 1
    assert dm.labels[0] == dm.labels[10] and dm.labels[8] == dm.labels[11]


# -------------------------------------------------------------------- errors
def test_missing_data_file_is_named(cfg_factory, tmp_path):
    from capml.training.run import run

    cfg = _train_cfg(cfg_factory, tmp_path / "nope.h5")
    with pytest.raises(FileNotFoundError, match="nope.h5: no such data file"):
        run(cfg)


def test_file_without_band_gaps_is_named(cfg_factory, tmp_path, data_file):
    from capml.training.run import run

    bare = store.read(data_file)
    bare.labels.clear()
    store.write(tmp_path / "bare.h5", bare)
    cfg = _train_cfg(cfg_factory, tmp_path / "bare.h5")
    with pytest.raises(DataError, match=r"bare.h5: has no 'band_gap' label \(0 of 10"):
        run(cfg)


def test_too_few_high_level_gaps_fail_before_training(cfg_factory, tmp_path, data_file):
    """The default run checks every step's file first: no minutes of pretraining
    followed by a crash on an unlabeled high-level file."""
    from capml.training.run import run

    high = tmp_path / "high.h5"
    shutil.copyfile(data_file, high)
    store.update_rows(high, range(7), labels={"band_gap": [np.nan] * 7})
    cfg = cfg_factory("train", f"data.low_level={data_file}", f"data.high_level={high}",
                      "logger=none")
    with pytest.raises(DataError, match=r"high.h5: only 3 of 10 structures have a finite "
                                        r"band gap; training needs at least 10"):
        run(cfg)
    assert not (tmp_path / "pretrain").exists()


def test_failed_trial_returns_inf_in_a_multirun(cfg_factory, data_file, tmp_path):
    """In a sweep a failing trial (here: freezing more layers than exist) gives inf."""
    from capml.training.run import objective

    cfg = _train_cfg(cfg_factory, data_file, "stage=pretrain",
                     "stage.steps.pretrain.freeze_layers=5")
    with pytest.raises(ValueError, match="freeze_layers=5"):
        objective(cfg)  # a single run raises
    hydra_cfg = compose_train_with_hydra("hydra.mode=MULTIRUN")
    with open_dict(hydra_cfg):
        hydra_cfg.hydra.job.num = 0
        hydra_cfg.hydra.runtime.output_dir = str(tmp_path)
    HydraConfig.instance().set_config(hydra_cfg)
    try:
        assert objective(cfg) == math.inf
    finally:
        HydraConfig.instance().cfg = None
    doc = json.loads((tmp_path / "metrics.json").read_text())
    assert doc["status"] == "failed" and "freeze_layers=5" in doc["error"]


@pytest.mark.slow
def test_gnn_learns_the_band_gap_trend_with_composition(cfg_factory, data_file, tmp_path):
    """GFN2 gaps of the cells rise by ~1.1 eV from Ag3SI to Ag3SBr; a short training run
    must learn that trend well beyond a constant predictor on held-out cells."""
    from capml.training.run import run

    cfg = _train_cfg(cfg_factory, data_file, "stage=pretrain", "model.lr=0.01",
                     "model.dropout=0.0", "stage.steps.pretrain.max_epochs=150",
                     "data.split.fractions=[0.6,0.2,0.2]")
    run(cfg)
    pred = pd.read_csv(tmp_path / "pretrain" / "predictions.csv")
    held = pred[pred.split != "train"]
    constant = np.mean(np.abs(held.band_gap - pred[pred.split == "train"].band_gap.mean()))
    mae = np.mean(np.abs(held.predicted_band_gap - held.band_gap))
    assert mae < 0.5 * constant
    rank = pd.Series(pred.predicted_band_gap.values).corr(pd.Series(pred.x.values),
                                                         method="spearman")
    assert rank > 0.8
