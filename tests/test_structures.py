"""System config -> parent cell, supercell, Vegard lattice, exact substitutions."""

from __future__ import annotations

import numpy as np
import pytest
import spglib
from omegaconf import OmegaConf

from capml.structures import System, SystemConfigError


def test_parent_is_cubic_antiperovskite(system):
    parent = system.parent(1.0)
    assert parent.get_chemical_formula() == "Ag3BrS"
    cell = (parent.cell.array, parent.get_scaled_positions(), parent.numbers)
    assert spglib.get_spacegroup(cell) == "Pm-3m (221)"
    # S at the body centre has six Ag neighbours at a/2.
    d = parent.get_distances(3, [0, 1, 2], mic=True)
    np.testing.assert_allclose(d, 4.793 / 2)


def test_vegard_lattice_is_linear(system):
    assert system.lattice(0.0)[0, 0] == pytest.approx(4.869)
    assert system.lattice(1.0)[0, 0] == pytest.approx(4.793)
    assert system.lattice(0.25)[0, 0] == pytest.approx(0.75 * 4.869 + 0.25 * 4.793)
    with pytest.raises(SystemConfigError, match="x = 1.5"):
        system.lattice(1.5)


@pytest.mark.parametrize("x", [0.0, 0.125, 0.3, 0.5, 0.77, 1.0])
def test_substitution_is_exact(system, x):
    rng = np.random.default_rng(1)
    for _ in range(20):
        atoms = system.random_solid_solution(x, rng)
        sym = np.array(atoms.get_chemical_symbols())
        k = round(x * 8)
        assert (sym == "Br").sum() == k and (sym == "I").sum() == 8 - k
        assert (sym == "Ag").sum() == 24 and (sym == "S").sum() == 8
        assert atoms.info["x"] == k / 8
        # Vegard lattice of the realised composition, not the requested one.
        np.testing.assert_allclose(atoms.cell.array, 2 * system.lattice(k / 8))


def test_orderings_are_drawn_uniformly(system):
    """One dopant among 8 sites: every site equally likely (chi-square)."""
    rng = np.random.default_rng(7)
    counts = np.zeros(8)
    for _ in range(1600):
        atoms = system.random_solid_solution(0.125, rng)
        sites = system.sublattice_indices(atoms)
        counts[np.flatnonzero(atoms.numbers[sites] == 35)[0]] += 1
    chi2 = ((counts - 200) ** 2 / 200).sum()
    assert chi2 < 24.3  # p = 0.001 for 7 degrees of freedom


def test_compositions(system):
    np.testing.assert_allclose(system.compositions(), np.arange(9) / 8)


def test_bad_system_config_names_the_key():
    cfg = OmegaConf.create({"name": "t", "sites": [{"label": "A", "species": "Na",
                                                    "frac": [0, 0, 0]}],
                            "substitution": {"site": "X", "host": "Cl", "dopant": "Br"},
                            "end_members": [{"x": 0, "a": 5.0}, {"x": 1, "a": 5.1}],
                            "supercell": [2, 2, 2]})
    with pytest.raises(SystemConfigError, match="substitution.site"):
        System.from_config(cfg)
    cfg.substitution.site = "A"
    cfg.end_members = [{"x": 0, "a": 5.0}]
    with pytest.raises(SystemConfigError, match="end_members"):
        System.from_config(cfg)
