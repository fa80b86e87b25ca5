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
