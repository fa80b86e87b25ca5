"""Radius graphs: exact edge parity with ase, features from the element table, scalers, cache."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.data import atomic_masses
from ase.neighborlist import neighbor_list

from capml.data import StructureSet
from capml.graphs import (
    NODE_FEATURES,
    MinMaxScaler,
    build_edges,
    cached_edges,
    element_table,
    node_features,
)
from capml.sampling import uniform

CUTOFF = 5.5


def _edge_set(i, j, d):
    return sorted(zip(i.tolist(), j.tolist(), np.round(d, 8).tolist()))


def _assert_parity(atoms, cutoff=CUTOFF):
    ref_i, ref_j, ref_d = neighbor_list("ijd", atoms, cutoff)
    edges = build_edges(StructureSet.from_atoms([atoms]), cutoff)
    src, dst = edges.index
    # edge (source j -> target i) is ase's pair (i, j)
    assert _edge_set(dst, src, edges.distance) == _edge_set(ref_i, ref_j, ref_d)
    assert edges.n_edges[0] == len(ref_i)
    return edges


def test_edges_match_ase_on_distorted_solid_solutions(system):
    rng = np.random.default_rng(7)
    for x, amplitude in [(0.5, 0.2), (0.25, 0.1), (1.0, 0.4)]:
        atoms = uniform(system.random_solid_solution(x, rng), amplitude, rng)
        edges = _assert_parity(atoms)
        # both directions of every edge, as an undirected graph needs
        fwd = set(zip(*edges.index.tolist()))
        assert fwd == {(b, a) for a, b in fwd}


def test_edges_match_ase_for_small_and_sheared_cells(system):
    """5-atom parent (cutoff > cell edge: periodic self-images, i == j) and a triclinic cell."""
    parent = system.parent(0.0)
    edges = _assert_parity(parent)
    src, dst = edges.index
    assert np.any(src == dst)  # an atom's own images within 5.5 A are edges
    assert np.isclose(edges.distance[src == dst].min(), parent.cell.lengths()[0])
    sheared = uniform(bulk("NaCl", "rocksalt", a=5.6), 0.1, np.random.default_rng(1))
    sheared.set_cell(sheared.cell.array + [[0, 0.4, 0.2], [0.3, 0, 0], [0, 0.5, 0]],
                     scale_atoms=True)
    _assert_parity(sheared)


def test_edges_match_ase_without_or_with_partial_periodicity():
    mol = molecule("CH3CH2OH")
    mol.cell = np.eye(3) * 20.0
    _assert_parity(mol, cutoff=2.0)
    slab = bulk("Cu", cubic=True) * (2, 2, 2)
    slab.pbc = (True, True, False)
    _assert_parity(slab, cutoff=4.0)


def test_node_features_come_from_the_element_table():
    table = element_table()
    ag, br = node_features([47, 35], table)
    assert ag[0] == 47 and br[0] == 35
    assert ag[1] == pytest.approx(1.93) and br[1] == pytest.approx(2.96)  # Pauling
    assert ag[2] == pytest.approx(atomic_masses[47], abs=1e-2)  # agrees with ase's masses
    assert ag[3] == pytest.approx(1.60) and br[3] == pytest.approx(1.15)  # A
    assert len(NODE_FEATURES) == table.shape[1] == 4


def test_element_without_a_feature_is_a_clear_error():
    with pytest.raises(ValueError, match=r"Ne \(Z = 10\).*pauling_electronegativity"):
        node_features([47, 10], element_table())
    with pytest.raises(ValueError, match="outside the element table"):
        node_features([0], element_table())


def test_min_max_scaler_round_trip_and_constant_column():
    values = np.array([[1.0, 5.0], [3.0, 5.0], [2.0, 5.0]])
    s = MinMaxScaler.fit(values)
    scaled = s.transform(values)
    assert scaled[:, 0].min() == 0.0 and scaled[:, 0].max() == 1.0
    assert np.all(scaled[:, 1] == 0.0)  # constant column -> 0, not NaN
    assert np.allclose(s.inverse(scaled), values)
    assert MinMaxScaler.from_dict(s.to_dict()) == s
    with pytest.raises(ValueError, match="NaN"):
        MinMaxScaler.fit([[np.nan]])


def test_edge_cache_is_keyed_by_structures_not_labels(tmp_path, system, monkeypatch):
    from capml.graphs import cache

    rng = np.random.default_rng(3)
    cells = [uniform(system.random_solid_solution(0.5, rng), 0.1, rng) for _ in range(3)]
    data = StructureSet.from_atoms(cells)
    path = tmp_path / "set.h5"
    first = cached_edges(path, data, CUTOFF)
    assert len(list((tmp_path / ".graph_cache").glob("set-r5.50-*.npz"))) == 1

    def no_build(*args):
        raise AssertionError("rebuilt although cached")

    monkeypatch.setattr(cache, "build_edges", no_build)
    data.labels["band_gap"] = np.array([1.0, 2.0, 3.0])  # labels arriving: cache stays valid
    again = cached_edges(path, data, CUTOFF)
    assert np.array_equal(again.index, first.index)
    assert np.array_equal(again.distance, first.distance)
    monkeypatch.undo()
    data.positions[0, 0] += 0.3  # a moved atom: rebuilt, and the stale file replaced
    moved = cached_edges(path, data, CUTOFF)
    assert not np.array_equal(moved.distance, first.distance)
    assert len(list((tmp_path / ".graph_cache").glob("set-r5.50-*.npz"))) == 1


def test_edges_subset_keeps_structure_order(system):
    rng = np.random.default_rng(5)
    cells = [system.parent(0.0), uniform(system.random_solid_solution(0.5, rng), 0.1, rng),
             Atoms("Cu", cell=np.eye(3) * 3.6, pbc=True)]
    edges = build_edges(StructureSet.from_atoms(cells), CUTOFF)
    sub = edges.subset([2, 0])
    ref = build_edges(StructureSet.from_atoms([cells[2], cells[0]]), CUTOFF)
    assert np.array_equal(sub.index, ref.index) and np.array_equal(sub.n_edges, ref.n_edges)
