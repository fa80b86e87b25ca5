"""Fail safe: full disks, killed training, nonsense config values, --help (issue 15).

Disk-full cases run in a subprocess inside a private mount namespace with a small
tmpfs (``unshare -m``); they skip with the reason where that is not permitted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from pytorch_lightning import Callback

from capml import data as store

ROOT = Path(__file__).resolve().parents[1]

# 32 Cu atoms, EMT, every frame flushed on its own (a new string heap per append), so a
# 600 KiB disk fills after some tens of frames.
MD_SCRIPT = """
import sys
from ase.build import bulk
from ase.calculators.emt import EMT
from capml.simulation import md
from capml.simulation.forces import make_evaluator
rep = md.Replica("cu", bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2), 400.0, seed=5)
settings = md.LangevinSettings(n_steps=150, stride=1, friction_per_fs=0.01,
                               log_interval_s=3600, flush_interval_s=0.0)
md.run([rep], lambda s: make_evaluator(s, EMT), settings, sys.argv[1], level="emt")
"""


def in_tmpfs(tmp_path: Path, size: str, body: str) -> subprocess.CompletedProcess:
    """Run shell ``body`` with $DISK a fresh tmpfs of ``size`` in a private mount
    namespace; skip where unshare/mount is not permitted."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare not installed: cannot make a small private disk")
    disk = tmp_path / "disk"
    disk.mkdir()
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=64k none {disk}"],
                           check=False, capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"private tmpfs not permitted here: {probe.stderr.strip()}")
    script = f"set -u\nmount -t tmpfs -o size={size} none {disk}\nDISK={disk}\n{body}"
    return subprocess.run(["unshare", "-m", "sh", "-c", script], check=False, capture_output=True,
                          text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)


def test_full_disk_during_md_keeps_frames_and_resumes_bit_identical(tmp_path):
    (tmp_path / "md.py").write_text(MD_SCRIPT)
    py = f"{sys.executable} {tmp_path / 'md.py'}"
    proc = in_tmpfs(tmp_path, "600k", textwrap.dedent(f"""
        {py} $DISK/md 2> {tmp_path}/err1.txt; echo $? > {tmp_path}/rc1
        cp $DISK/md/cu.h5 {tmp_path}/after_full.h5
        ls -a $DISK/md > {tmp_path}/listing
        mount -o remount,size=8m $DISK
        {py} $DISK/md 2> {tmp_path}/err2.txt; echo $? > {tmp_path}/rc2
        cp $DISK/md/cu.h5 {tmp_path}/resumed.h5
    """))
    assert proc.returncode == 0, proc.stderr
    err = (tmp_path / "err1.txt").read_text()
    assert (tmp_path / "rc1").read_text().strip() == "1", err  # a Python error, not 139
    assert "DiskFullError" in err and "md/cu.h5" in err and "bytes free" in err, err
    kept = store.read(tmp_path / "after_full.h5")  # every frame written before stays readable
    assert 3 < len(kept) < 150
    np.testing.assert_array_equal(kept.meta["step"], np.arange(len(kept)))
    assert (tmp_path / "listing").read_text().split() == [".", "..", "cu.h5"]  # no temp files
    assert (tmp_path / "rc2").read_text().strip() == "0", (tmp_path / "err2.txt").read_text()
    resumed = store.read(tmp_path / "resumed.h5")
    np.testing.assert_array_equal(resumed.positions[:kept.positions.shape[0]], kept.positions)
    subprocess.run([sys.executable, str(tmp_path / "md.py"), str(tmp_path / "ref")], check=True,
                   cwd=ROOT, capture_output=True)
    reference = store.read(tmp_path / "ref" / "cu.h5")  # the same run, never interrupted
    assert len(resumed) == len(reference) == 151
    np.testing.assert_array_equal(resumed.meta["rng_state"], reference.meta["rng_state"])
    # EMT's kept neighbour list sums in another order after a restart (see test_md)
    np.testing.assert_allclose(resumed.positions, reference.positions, rtol=0, atol=1e-9)


WRITE_SCRIPT = """
import sys, numpy as np
from capml import data as store
from capml.data import StructureSet
disk, what = sys.argv[1], sys.argv[2]
n, na = 400, 40
rng = np.random.default_rng(0)
big = StructureSet(n_atoms=np.full(n, na), numbers=np.tile(np.arange(1, na + 1), n),
                   positions=rng.random((n * na, 3)), cell=np.repeat(10 * np.eye(3)[None], n, 0),
                   pbc=np.ones((n, 3), bool), meta={"id": np.array([f"s{i}" for i in range(n)], dtype=object)})
if what == "write":
    store.write(f"{disk}/big.h5", big)
else:
    store.write(f"{disk}/set.h5", big.subset(range(10)))
    with open(f"{disk}/filler", "wb") as fh:  # leave less room than a forces label needs
        fh.write(b"0" * (store.store.free_bytes(disk) - 40_000))
    store.update_rows(f"{disk}/set.h5", [0], labels={"forces": [np.ones((na, 3))]})
"""


@pytest.mark.parametrize("what", ["write", "update_rows"])
def test_full_disk_write_and_label_raise_named_errors_and_leave_no_temp_files(tmp_path, what):
    (tmp_path / "w.py").write_text(WRITE_SCRIPT)
    proc = in_tmpfs(tmp_path, "300k", textwrap.dedent(f"""
        {sys.executable} {tmp_path / 'w.py'} $DISK {what}; echo $? > {tmp_path}/rc
        ls -a $DISK > {tmp_path}/listing
        [ -f $DISK/set.h5 ] && cp $DISK/set.h5 {tmp_path}/set.h5
        true
    """))
    rc = (tmp_path / "rc").read_text().strip()
    assert rc == "1", proc.stderr  # not 139 (segfault)
    target = "big.h5" if what == "write" else "set.h5"
    assert "DiskFullError" in proc.stderr and f"{target}: not enough free space" in proc.stderr
    assert "bytes free" in proc.stderr
    listing = (tmp_path / "listing").read_text().split()
    assert not [name for name in listing if name.endswith(".tmp")]  # nothing left behind
    if what == "update_rows":  # the file is unchanged and readable
        kept = store.read(tmp_path / "set.h5")
        assert len(kept) == 10 and "forces" not in kept.labels


# ------------------------------------------------------------------ training
class StopAfterEpoch(Callback):
    """Stands in for a kill: raises at the end of epoch ``epoch`` (after its checkpoints)."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise RuntimeError(f"killed after epoch {self.epoch}")


@pytest.fixture(scope="module")
def cells(request, tmp_path_factory):
    from helpers.gnn_data import labeled_file

    return labeled_file(request.config.cache.mkdir("capml-gnn"),
                        tmp_path_factory.mktemp("gnn") / "cells.h5")


def pretrain_cfg(cfg_factory, cells, *overrides):
    return cfg_factory("train", f"data.low_level={cells}", f"data.high_level={cells}",
                       "data.min_labeled=5", "logger=csv", "stage=pretrain",
                       "stage.steps.pretrain.max_epochs=6", "callbacks.early_stopping=null",
                       *overrides)


def epochs_logged(step_dir: Path, version: int) -> list[int]:
    import pandas as pd

    log = pd.read_csv(step_dir / f"version_{version}" / "metrics.csv")
    return sorted(int(e) for e in log.dropna(subset=["val/mae"])["epoch"].unique())


def test_killed_training_resumes_from_last_checkpoint_and_reruns_skip(cfg_factory, cells,
                                                                       tmp_path):
    import torch

    from capml.training.run import run

    killed = pretrain_cfg(cfg_factory, cells,
                          "+callbacks.kill._target_=test_failsafe.StopAfterEpoch",
                          "+callbacks.kill.epoch=2")
    with pytest.raises(RuntimeError, match="killed after epoch 2"):
        run(killed)
    step = tmp_path / "pretrain"
    assert not (step / "metrics.json").exists()
    # the kill came before epoch 2 was checkpointed: last.ckpt holds epoch 1
    assert torch.load(step / "checkpoints" / "last.ckpt", weights_only=False)["epoch"] == 1
    run(pretrain_cfg(cfg_factory, cells))  # the same command again, same run directory
    assert epochs_logged(step, 0) == [0, 1, 2] and epochs_logged(step, 1) == [2, 3, 4, 5]
    assert sorted(p.name for p in (step / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    result = (step / "metrics.json").read_text()
    best = torch.load(step / "checkpoints" / "best.ckpt", weights_only=False)
    monitor = next(v for k, v in best["callbacks"].items() if "ModelCheckpoint" in k)
    assert monitor["best_model_path"] == str(step / "checkpoints" / "best.ckpt")
    import pandas as pd

    val = pd.concat([pd.read_csv(step / f"version_{v}" / "metrics.csv") for v in (0, 1)])
    val = val.dropna(subset=["val/mae"])
    assert float(monitor["best_model_score"]) == pytest.approx(val["val/mae"].min(), rel=1e-6)
    assert best["epoch"] == int(val.loc[val["val/mae"].idxmin(), "epoch"])
    stamp = (step / "checkpoints" / "best.ckpt").stat().st_mtime_ns
    run(pretrain_cfg(cfg_factory, cells))  # finished: nothing is retrained or rewritten
    assert not (step / "version_2").exists()
    assert (step / "checkpoints" / "best.ckpt").stat().st_mtime_ns == stamp
    assert (step / "metrics.json").read_text() == result
    with pytest.raises(ValueError, match="other settings"):
        run(pretrain_cfg(cfg_factory, cells, "model.lr=0.05"))


def test_fresh_start_removes_stale_checkpoints(cfg_factory, cells, tmp_path):
    """A run killed before its first last.ckpt left only best files: they go."""
    from capml.training.run import run

    ckpts = tmp_path / "pretrain" / "checkpoints"
    ckpts.mkdir(parents=True)
    for name in ("best.ckpt", "best-v1.ckpt"):
        (ckpts / name).write_bytes(b"stale")
    run(pretrain_cfg(cfg_factory, cells, "stage.steps.pretrain.max_epochs=2"))
    assert sorted(p.name for p in ckpts.iterdir()) == ["best.ckpt", "last.ckpt"]
    assert (ckpts / "best.ckpt").read_bytes() != b"stale"


# --------------------------------------------------------------- config values
@pytest.mark.parametrize("overrides,named", [
    (["stage.steps.pretrain.max_epochs=0"], ("stage.steps.pretrain.max_epochs = 0: expected an "
                                            "integer >= 1")),
    (["stage.steps.pretrain.max_epochs=-1"], "max_epochs = -1"),
    (["model.lr=0"], "model.lr = 0: expected a learning rate > 0"),
    (["stage.steps.pretrain.lr=-1e-3"], "stage.steps.pretrain.lr = -0.001"),
    (["stage.optimize=bogus"], ("stage.optimize = 'bogus': expected the name of a step of stage "
                               "'pretrain': one of ['pretrain']")),
    (["model.dropout=1.0"], "model.dropout = 1.0"),
])
def test_nonsense_training_values_fail_before_any_data_is_read(cfg_factory, tmp_path,
                                                               overrides, named):
    from capml.training.run import run
    from capml.utils.validation import ConfigError

    missing = tmp_path / "nowhere.h5"  # reading it would fail: validation must come first
    cfg = cfg_factory("train", "stage=pretrain", f"data.low_level={missing}", *overrides)
    with pytest.raises(ConfigError) as err:
        run(cfg)
    assert named in str(err.value)
    assert not (tmp_path / "pretrain").exists()


def test_every_shipped_config_passes_validation(cfg_factory):
    from capml.utils.validation import check

    for name in ("two_stage", "pretrain", "finetune", "scratch", "paper"):
        check(cfg_factory("train", f"stage={name}", "stage.steps.finetune.init_from=null"
                          if name == "finetune" else "seed=0"), "train")
    check(cfg_factory("train", "model=mace"), "train")
    from hydra.errors import ConfigCompositionException

    for experiment in sorted(p.stem for p in (ROOT / "configs" / "experiment").glob("*.yaml")):
        checked = []
        for entry in ("simulate", "analyze", "train", "train_mace"):  # entry configs
            try:
                cfg = cfg_factory(entry, f"experiment={experiment}")
            except ConfigCompositionException:
                continue
            check(cfg, "train" if entry == "train_mace" else entry)  # both are train.py
            checked.append(entry)
        assert checked, f"experiment={experiment} composes with no entry point"
    for task in ("generate", "md", "phonons", "enumerate", "relax"):
        check(cfg_factory("simulate", f"task={task}"), "simulate")


@pytest.mark.parametrize("overrides,named", [
    (["task=md", "task.timestep_fs=0"], "task.timestep_fs = 0: expected a time step > 0"),
    (["task=md", "task.stride=0"], "task.stride = 0"),
    (["task=generate", "system.x=0.3"], ("x = 0.3 is not realisable with the 8 X sites of the "
                                        "supercell (x = k/8): nearest x = 0.25 (2/8) and "
                                        "x = 0.375 (3/8)")),
    (["task=generate", "task.compositions=[0.5,0.77]"], "task.compositions: x = 0.77"),
    (["task=generate", "system.x=1.5"], "x = 1.5: expected 0 <= x <= 1"),
])
def test_nonsense_simulation_values_are_refused(cfg_factory, overrides, named):
    from capml.utils.validation import ConfigError, check

    with pytest.raises(ConfigError) as err:
        check(cfg_factory("simulate", *overrides), "simulate")
    assert named in str(err.value)


def test_round_x_is_explicit(cfg_factory, system):
    from capml.utils.validation import check

    check(cfg_factory("simulate", "task=generate", "system.x=0.3", "round_x=true"), "simulate")
    assert system.realisable(0.375) == 0.375


def test_cli_refuses_before_compute_and_help_lists_tasks(tmp_path):
    """The entry points: a bad value exits 1 with the message (no traceback, no output);
    --help of each names every task and gives examples."""
    from capml.tasks import TASKS

    calls = {"bad": ("simulate.py", "task=md", "task.timestep_fs=0",
                     f"hydra.run.dir={tmp_path}/md"),
             "none": ("analyze.py", f"hydra.run.dir={tmp_path}/none"),
             **{entry: (f"{entry}.py", "--help") for entry in ("simulate", "analyze", "train")}}
    procs = {k: subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for k, args in calls.items()}
    done = {k: (p, *p.communicate(timeout=120)) for k, p in procs.items()}  # in parallel
    bad, _, err = done["bad"]
    assert bad.returncode == 1 and "task.timestep_fs = 0" in err
    assert "Traceback" not in err and not list((tmp_path / "md").glob("*.h5"))
    for entry in ("simulate", "analyze", "train"):
        proc, out, err = done[entry]
        assert proc.returncode == 0 and "Traceback" not in err, err
        assert "Examples:" in out and f"python {entry}.py" in out
        for task in TASKS.get(entry, ()):
            assert f"  {task} " in out, f"{entry}.py --help does not list {task}"
    none, _, err = done["none"]
    assert none.returncode == 1 and "no task chosen: give task=<name>" in err


# ------------------------------------------------------------- named errors
@pytest.mark.parametrize("content,what", [(b"", "an empty file"),
                                          (b"id,gap\n1,2.0\n", "13 bytes that are not HDF5")])
def test_train_on_a_non_hdf5_data_file_names_the_file(cfg_factory, tmp_path, content, what):
    from capml.data import DataError
    from capml.training.run import run

    bad = tmp_path / "gaps.h5"
    bad.write_bytes(content)
    with pytest.raises(DataError) as err:
        run(cfg_factory("train", "stage=pretrain", f"data.low_level={bad}"))
    assert f"{bad}: expected a capml HDF5 data file, got {what}" in str(err.value)
    for reader in (store.count, store.read, store.read_attrs):
        with pytest.raises(DataError, match=str(bad)):
            reader(bad)
