"""Closest contacts relative to covalent radii, against ase's all-pairs distances."""

import numpy as np
import pytest
from ase.build import bulk
from ase.data import covalent_radii

from capml.structures.contacts import closest_contact


def brute_force(atoms):
    d = atoms.get_all_distances(mic=True)
    r = covalent_radii[atoms.numbers]
    ratio = d / (r[:, None] + r[None, :])
    np.fill_diagonal(ratio, np.inf)
    return ratio.min(), d.flat[np.argmin(ratio)]


@pytest.mark.parametrize("seed", range(5))
def test_closest_contact_equals_all_pairs_on_distorted_cells(seed):
    rng = np.random.default_rng(seed)
    atoms = bulk("NaCl", "rocksalt", a=5.6, cubic=True) * 2
    atoms.positions += rng.normal(0, 0.3, atoms.positions.shape)
    hit = closest_contact(atoms.numbers, atoms.positions, atoms.cell.array)
    ratio, distance = brute_force(atoms)
    assert hit.ratio == pytest.approx(ratio) and hit.distance == pytest.approx(distance)
    assert hit.pair in ("Na-Cl", "Cl-Na", "Na-Na", "Cl-Cl")


def test_copper_contact_and_a_collapsed_pair():
    cu = bulk("Cu", "fcc", a=3.6, cubic=True)
    hit = closest_contact(cu.numbers, cu.positions, cu.cell.array)
    assert hit.ratio == pytest.approx(3.6 / 2**0.5 / (2 * 1.32), abs=1e-3)
    assert hit.describe().startswith("Cu-Cu 2.546 A")
    cu.positions[1] = cu.positions[0] + [0.0, 0.0, 1.3]
    assert closest_contact(cu.numbers, cu.positions, cu.cell.array).ratio < 0.5
    assert closest_contact(cu.numbers, cu.positions * 3, cu.cell.array * 3, max_ratio=1.0) is None
