"""Seeded, stratified, optionally ordering-grouped train/val/test splits."""

from __future__ import annotations

from collections import Counter
from itertools import combinations

import numpy as np
import pytest

from capml import data as store
from capml.data import StructureSet
from capml.data.splits import assign_splits, ordering_groups, write_splits


def _demo_like_meta():
    """The layout of the demo low-level set: 9 compositions x (54 phonon, 16 uniform, 1 eq)."""
    x, method = [], []
    for k in range(9):
        for m, n in (("phonon", 54), ("uniform", 16), ("equilibrium", 1)):
            x += [k / 8] * n
            method += [m] * n
    return np.array(x), np.array(method, dtype=object)


def test_split_fractions_hold_overall_and_in_every_stratum():
    x, method = _demo_like_meta()
    labels = assign_splits(x, method, seed=0, fractions=(0.8, 0.1, 0.1))
    counts = Counter(labels)
    assert abs(counts["train"] - 0.8 * len(x)) <= 1 and abs(counts["test"] - 0.1 * len(x)) <= 1
    for xv in np.unique(x):
        for m in ("phonon", "uniform"):
            sel = (x == xv) & (method == m)
            for split, f in (("train", 0.8), ("val", 0.1), ("test", 0.1)):
                assert abs(np.sum(labels[sel] == split) - f * sel.sum()) <= 1.0


def test_splits_are_seeded():
    x, method = _demo_like_meta()
    a = assign_splits(x, method, seed=1)
    assert np.array_equal(a, assign_splits(x, method, seed=1))
    assert not np.array_equal(a, assign_splits(x, method, seed=2))


def test_groups_never_straddle_splits():
    x, method = _demo_like_meta()
    groups = np.arange(len(x)) // 5
    labels = assign_splits(x, method, seed=0, groups=groups)
    for g in np.unique(groups):
        assert len(set(labels[groups == g])) == 1
    assert set(labels) == {"train", "val", "test"}


def test_bad_fractions_are_named():
    with pytest.raises(ValueError, match=r"split fractions \[0.8, 0.3, 0.1\]"):
        assign_splits([0.0], ["phonon"], 0, fractions=(0.8, 0.3, 0.1))


def test_ordering_groups_follow_the_supercell_symmetry(system):
    """Single-dopant cells are all one ordering; the 28 two-dopant orderings of the
    2x2x2 supercell's 8 halide sites fall into 3 classes (the three pair distances)."""
    ideal = system.ordered_supercell(0.0)
    sites = system.sublattice_indices(ideal)
    singles = [system.with_dopants(ideal, [s]) for s in sites]
    pairs = [system.with_dopants(ideal, list(p)) for p in combinations(sites, 2)]
    keys = ordering_groups(StructureSet.from_atoms(singles + pairs), system)
    assert len(set(keys[:8])) == 1
    pair_keys = keys[8:]
    assert len(set(pair_keys)) == 3
    sizes = sorted(Counter(pair_keys).values())
    assert sizes == [4, 12, 12]  # body diagonals, face diagonals, edges


def test_ordering_groups_reject_foreign_cells(system):
    from ase.build import bulk

    from capml.data import DataError

    with pytest.raises(DataError, match="do not follow the order"):
        ordering_groups(StructureSet.from_atoms([bulk("Cu")]), system)


def test_write_splits_stores_meta_split(tmp_path, system):
    rng = np.random.default_rng(0)
    cells = []
    for k in range(20):
        a = system.random_solid_solution(k % 5 / 4, rng)
        a.info = {"x": a.info["x"], "method": "equilibrium", "id": f"c{k}"}
        cells.append(a)
    path = store.write(tmp_path / "s.h5", StructureSet.from_atoms(cells))
    labels = write_splits(path, seed=4, system=system, group_by="ordering")
    assert np.array_equal(store.read_meta(path, "split"), labels)
    assert store.read_attrs(path)["split_seed"] == 4
    keys = ordering_groups(store.read(path), system)
    for key in set(keys):
        assert len(set(labels[keys == key])) == 1


def test_split_task_stores_a_seeded_stratified_split(cfg_factory, tmp_path, small_set):
    """simulate.py task=split writes meta/split for every row; the same seed gives the same
    split, and the file's other contents are untouched."""
    import numpy as np

    from capml import data as store
    from capml.tasks import dispatch

    path = tmp_path / "set.h5"
    store.write(path, small_set)
    before = store.read(path)
    labels = dispatch("simulate", cfg_factory("simulate", "task=split", f"task.input={path}",
                                              "seed=3"))
    after = store.read(path)
    assert list(after.meta["split"]) == list(labels) and len(labels) == len(small_set)
    assert set(labels) <= {"train", "val", "test"}
    np.testing.assert_array_equal(after.positions, before.positions)
    again = dispatch("simulate", cfg_factory("simulate", "task=split", f"task.input={path}",
                                             "seed=3"))
    assert list(again) == list(labels)


def _meta_set(x, method, split=None) -> StructureSet:
    """A StructureSet of one-atom cells carrying only the metadata a split needs."""
    from ase import Atoms

    atoms = []
    for i, (xi, mi) in enumerate(zip(x, method)):
        a = Atoms("Cu", cell=np.eye(3) * 3.0, pbc=True)
        a.info.update(x=float(xi), method=str(mi), id=f"s{i:04d}")
        if split is not None:
            a.info["split"] = split[i]
        atoms.append(a)
    return StructureSet.from_atoms(atoms)


def test_train_size_subsamples_train_only_deterministically_and_stratified():
    from capml.data.splits import SplitSettings, resolve_split

    x, method = _demo_like_meta()
    data = _meta_set(x, method)
    full, source = resolve_split(data, SplitSettings(seed=5))
    a, _ = resolve_split(data, SplitSettings(seed=5, train_size=100))
    b, _ = resolve_split(data, SplitSettings(seed=5, train_size=100))
    assert source == "computed" and np.array_equal(a, b)  # deterministic
    assert np.sum(a == "train") == 100 and np.sum(full == "train") > 500
    kept = a == "train"
    assert np.all(full[kept] == "train")  # a subset of the train split
    for split in ("val", "test"):  # val and test identical
        assert np.array_equal(a == split, full == split)
    assert set(a[(full == "train") & ~kept]) == {"unused"}
    # stratified like the split: every (x, method) stratum keeps its share to within one
    train = full == "train"
    for key in {(xi, mi) for xi, mi in zip(x, method)}:
        sel = train & (x == key[0]) & (method == key[1])
        assert abs(np.sum(kept & sel) - 100 * sel.sum() / train.sum()) < 1.0
    other, _ = resolve_split(data, SplitSettings(seed=6, train_size=100))
    assert not np.array_equal(other == "train", (full == "train") & kept)
    with pytest.raises(ValueError, match="train_size=9999 exceeds"):
        resolve_split(data, SplitSettings(seed=5, train_size=9999))
    with pytest.raises(ValueError, match="train_size=0"):
        SplitSettings(train_size=0)


def test_stored_split_is_used_whole_or_refused_when_partial():
    from capml.data.splits import SplitSettings, resolve_split

    x, method = np.zeros(6), np.array(["phonon"] * 6, dtype=object)
    stored = ["train", "train", "train", "train", "val", "test"]
    labels, source = resolve_split(_meta_set(x, method, stored), SplitSettings(), "a.h5")
    assert source == "stored" and list(labels) == stored
    kept, _ = resolve_split(_meta_set(x, method, stored), SplitSettings(train_size=2))
    assert list(kept[4:]) == ["val", "test"] and np.sum(kept == "train") == 2
    partial = _meta_set(x, method, stored[:5] + [""])
    with pytest.raises(store.DataError, match="a.h5: meta/split is set for 5 of 6"):
        resolve_split(partial, SplitSettings(), "a.h5")
    labels, source = resolve_split(partial, SplitSettings(use_stored=False))
    assert source == "computed"


def test_train_size_is_a_data_split_key_of_both_trainings(cfg_factory):
    from capml.data.splits import SplitSettings

    for entry in ("train", "train_mace"):
        cfg = cfg_factory(entry, "data.split.train_size=50")
        assert SplitSettings.from_config(cfg.data.split).train_size == 50
    assert cfg_factory("train_mace").data.split.fractions == [0.85, 0.05, 0.1]
