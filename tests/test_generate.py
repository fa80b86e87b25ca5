"""`simulate.py task=generate`: counts, metadata, seeds, resolved config, CLI errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import yaml

from capml import data as store
from capml.tasks import dispatch

ROOT_OVERRIDES = ["task=generate", "task.compositions=[0.25,1.0]",
                  "task.samples=[{method: phonon, temperatures: [150, 450], per_value: 2},"
                  "{method: uniform, amplitudes: [0.1], per_value: 1},"
                  "{method: equilibrium, per_value: 1}]"]


def test_generate_writes_structures_with_metadata(cfg_factory, tmp_path):
    cfg = cfg_factory("simulate", *ROOT_OVERRIDES, "seed=3")
    path = dispatch("simulate", cfg)
    data = store.read(path)
    assert len(data) == 2 * (4 + 1 + 1)
    assert sorted(set(np.round(data.meta["x"], 3))) == [0.25, 1.0]
    ph = data.select(method="phonon")
    assert sorted(set(ph.meta["temperature"])) == [150.0, 450.0]
    assert np.isnan(data.select(method="uniform").meta["temperature"]).all()
    assert (data.select(method="uniform").meta["amplitude"] == 0.1).all()
    assert len(set(data.meta["seed"])) == len(data) and len(set(data.meta["id"])) == len(data)
    for atoms in data.to_atoms():
        br = (atoms.numbers == 35).sum()
        assert br == round(atoms.info["x"] * 8)
    # the resolved config travels with the file
    saved = yaml.safe_load(store.read_attrs(path)["config"])
    assert saved["seed"] == 3 and saved["task"]["compositions"] == [0.25, 1.0]


def test_same_seed_same_file_contents(cfg_factory, tmp_path):
    a = store.read(dispatch("simulate", cfg_factory("simulate", *ROOT_OVERRIDES, "seed=9",
                                                   "task.output=" + str(tmp_path / "a.h5"))))
    b = store.read(dispatch("simulate", cfg_factory("simulate", *ROOT_OVERRIDES, "seed=9",
                                                   "task.output=" + str(tmp_path / "b.h5"))))
    c = store.read(dispatch("simulate", cfg_factory("simulate", *ROOT_OVERRIDES, "seed=10",
                                                   "task.output=" + str(tmp_path / "c.h5"))))
    np.testing.assert_array_equal(a.positions, b.positions)
    np.testing.assert_array_equal(a.numbers, b.numbers)
    assert not np.array_equal(a.positions, c.positions)


def test_one_structure_regenerates_from_its_own_seed(cfg_factory, system):
    from capml.sampling import supercell_force_constants, thermal
    from capml.sampling.generate import load_end_members

    cfg = cfg_factory("simulate", *ROOT_OVERRIDES)
    data = store.read(dispatch("simulate", cfg))
    i = int(np.flatnonzero(data.meta["method"] == "phonon")[3])
    seed, x, temp = int(data.meta["seed"][i]), data.meta["x"][i], data.meta["temperature"][i]
    atoms = system.random_solid_solution(x, np.random.default_rng(seed))
    ends = load_end_members(cfg.system.force_constants)  # the ones the file was made with
    again = thermal(atoms, supercell_force_constants(ends, atoms, x), temp, seed=seed,
                    cutoff_frequency=1.0)[0]
    np.testing.assert_array_equal(again.positions, data.subset([i]).positions)


def test_bad_sample_method(cfg_factory):
    cfg = cfg_factory("simulate", "task=generate", "task.samples=[{method: shake}]")
    with pytest.raises(ValueError, match="method 'shake'"):
        dispatch("simulate", cfg)


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "simulate.py", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_cli_generate_and_unknown_task(tmp_path):
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "run"
    proc = run_cli("task=generate", "system.x=0.5", "task.samples=[{method: equilibrium}]",
                   f"hydra.run.dir={out}", cwd=root)
    assert proc.returncode == 0, proc.stderr
    assert (out / "structures.h5").exists() and (out / ".hydra" / "config.yaml").exists()
    assert store.read(out / "structures.h5").meta["x"][0] == 0.5
    proc = run_cli("task=nonsense", f"hydra.run.dir={tmp_path / 'x'}", cwd=root)
    assert proc.returncode != 0
    assert "Could not find 'task/nonsense'" in proc.stderr and "generate" in proc.stderr


def test_append_keeps_rows_and_splits_and_refuses_silent_overwrite(cfg_factory, tmp_path):
    from capml.data.splits import write_splits

    out = "task.output=" + str(tmp_path / "set.h5")
    path = dispatch("simulate", cfg_factory("simulate", *ROOT_OVERRIDES, "seed=4", out))
    before = store.read(path)
    store.update_rows(path, [0], meta={"label_status": ["ok"]})  # stands in for hours of labels
    splits = write_splits(path, seed=4)
    with pytest.raises(FileExistsError, match="task.append=true"):
        dispatch("simulate", cfg_factory("simulate", *ROOT_OVERRIDES, "seed=4", out))
    dispatch("simulate", cfg_factory("simulate", *ROOT_OVERRIDES, "seed=4", out, "task.append=true"))
    after = store.read(path)
    n = len(before)
    assert len(after) == 2 * n
    np.testing.assert_array_equal(after.subset(range(n)).positions, before.positions)
    assert after.meta["label_status"][0] == "ok" and (after.meta["label_status"][n:] == "").all()
    # ids continue, seeds (and so structures) are new although the config seed is the same
    assert after.meta["id"][n] == f"s{n:06d}" and len(set(after.meta["id"])) == 2 * n
    assert not set(after.meta["seed"][n:]) & set(before.meta["seed"])
    assert f"config_append_{n}" in store.read_attrs(path)
    # the old rows keep their split, the new ones get one, stratified among themselves
    again = write_splits(path, seed=4)
    np.testing.assert_array_equal(again[:n], splits)
    assert set(again[n:]) == {"train", "val", "test"}
    assert (store.read_meta(path, "split") == again).all()
    # reassign recomputes all rows as for a fresh file
    from capml.data.splits import assign_splits

    fresh = assign_splits(after.meta["x"], after.meta["method"], 4)
    np.testing.assert_array_equal(write_splits(path, seed=4, reassign=True), fresh)
