"""Frozen Gamma-mode distortions: thermal amplitudes by hand, rotation invariance inside
degenerate subspaces."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from scipy import constants

from capml.analysis import gamma_modes as gm
from capml.analysis import nmd
from capml.simulation import phonons
from capml.simulation.forces import make_evaluator


def test_two_atom_stretch_amplitude_matches_hand_calculation():
    """Two atoms (Ag, S) joined by a spring k along x: the bond-length RMS amplitude of the
    stretch mode is sqrt(hbar (1 + 2n) / (2 mu omega)) with omega = sqrt(k/mu)."""
    k = 3.0  # eV/A^2
    m = np.array([107.8682, 32.06])
    fc = np.zeros((2, 2, 3, 3))
    fc[0, 0, 0, 0] = fc[1, 1, 0, 0] = k
    fc[0, 1, 0, 0] = fc[1, 0, 0, 0] = -k
    modes = nmd.gamma_modes(fc, m)
    nu = int(np.argmax(modes.frequencies))
    mu_kg = m.prod() / m.sum() * constants.atomic_mass
    omega = np.sqrt(k * constants.e / 1e-20 / mu_kg)  # rad/s
    assert modes.frequencies[nu] == pytest.approx(omega / (2 * np.pi) / 1e12, rel=1e-6)
    for temperature in (0.0, 300.0, 600.0):
        n = 0.0 if temperature == 0 else 1 / np.expm1(constants.hbar * omega /
                                                       (constants.k * temperature))
        hand = np.sqrt(constants.hbar * (1 + 2 * n) / (2 * mu_kg * omega)) * 1e10  # A
        amp = gm.thermal_amplitude(modes.frequencies[nu], temperature)
        u = gm.displacement(modes, nu, amp)
        assert abs(u[0, 0] - u[1, 0]) == pytest.approx(hand, rel=1e-6)
        assert np.allclose(u[:, 1:], 0)


@pytest.fixture(scope="module")
def copper():
    cu = bulk("Cu", "fcc", a=3.6, cubic=True)
    ph = phonons.force_constants(cu, lambda cells: make_evaluator(cells, EMT),
                                 supercell_matrix=[2, 2, 2])
    return Atoms(ph.supercell.symbols, cell=ph.supercell.cell,
                 scaled_positions=ph.supercell.scaled_positions, pbc=True), \
        nmd.modes_from_phonopy(ph)


def quadratic_gap(reference: Atoms, seed: int = 0):
    """A gap that is an exact quadratic function of the displacements."""
    rng = np.random.default_rng(seed)
    n = 3 * len(reference)
    a = rng.normal(size=(n, n))
    hessian, gradient = (a + a.T) / n, rng.normal(size=n)

    def gap_fn(cells):
        u = np.array([(c.positions - reference.positions).ravel() for c in cells])
        return 2.0 + u @ gradient + 0.5 * np.einsum("ci,ij,cj->c", u, hessian, u)
    return gap_fn


def test_degenerate_modes_give_the_same_change_for_any_rotation(copper):
    atoms, modes = copper
    gap_fn = quadratic_gap(atoms)
    table = gm.gap_changes(atoms, modes, 300.0, gap_fn)
    groups = nmd.degenerate_groups(modes.frequencies, 0.01)
    big = max(groups, key=len)
    assert len(big) >= 3
    rng = np.random.default_rng(1)
    rotation, _ = np.linalg.qr(rng.normal(size=(len(big), len(big))))
    vectors = modes.eigenvectors.copy()
    vectors[big] = np.einsum("ab,bjc->ajc", rotation, modes.eigenvectors[big])
    rotated = gm.gap_changes(atoms, nmd.Modes(modes.frequencies, vectors, modes.masses), 300.0,
                             gap_fn)
    np.testing.assert_allclose(rotated["delta_gap"], table["delta_gap"], atol=1e-12)
    # while the single-mode values inside the subspace do change with the rotation
    inside = table["mode"].isin(big)
    assert not np.allclose(rotated.loc[inside, "mode_delta"], table.loc[inside, "mode_delta"])


def test_linear_gap_averages_to_zero_and_translations_are_skipped(copper):
    atoms, modes = copper
    g = np.random.default_rng(2).normal(size=3 * len(atoms))
    table = gm.gap_changes(atoms, modes, 600.0,
                           lambda cells: np.array([1 + (c.positions - atoms.positions).ravel()
                                                   @ g for c in cells]))
    assert len(table) == modes.n_modes - 3
    np.testing.assert_allclose(table["delta_gap"], 0, atol=1e-12)
    assert np.allclose(table.filter(like="share_").sum(axis=1), 1)
