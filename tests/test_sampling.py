"""Displacement sampling: thermal amplitudes equal phonopy's analytic ones; seeds reproduce."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from capml.sampling import harmonic_phonopy, supercell_force_constants, thermal, uniform
from capml.simulation.forces import make_evaluator
from capml.simulation.phonons import force_constants
from capml.simulation.phonopy_io import load_phonopy, supercell_atoms


@pytest.fixture(scope="module")
def copper():
    """EMT copper, 32-atom supercell, finite-displacement force constants (stable crystal)."""
    ph = force_constants(bulk("Cu", "fcc", a=3.61, cubic=True),
                         lambda cells: make_evaluator(cells, EMT), supercell_matrix=[2, 2, 2],
                         primitive_matrix="P")
    return supercell_atoms(ph), ph.force_constants


@pytest.mark.parametrize("temperature", [0.0, 300.0])
def test_mean_square_displacement_matches_phonopy_analytic(copper, temperature):
    atoms, fc = copper
    n = 3000
    samples = thermal(atoms, fc, temperature, seed=11, n_samples=n)
    u = np.array([s.positions - atoms.positions for s in samples])
    msd = (u ** 2).mean(axis=0)  # [atom, direction]
    ph = harmonic_phonopy(atoms, fc)
    ph.run_mesh([1, 1, 1], with_eigenvectors=True, is_mesh_symmetry=False)
    ph.run_thermal_displacements(temperatures=[temperature], exclude_gamma_acoustic=True)
    analytic = ph.thermal_displacements.thermal_displacements[0].reshape(-1, 3)
    # Gaussian components: the standard error of a sample mean of u^2 is <u^2> sqrt(2/n).
    sigma = analytic * np.sqrt(2.0 / n)
    assert np.all(np.abs(msd - analytic) < 5 * sigma)
    assert msd.mean() == pytest.approx(analytic.mean(), rel=0.03)
    # zero-point motion is included: the 0 K amplitude is finite
    assert analytic.mean() > 1e-3
    # acoustic (rigid-translation) modes are not excited
    np.testing.assert_allclose(u.mean(axis=1), 0, atol=1e-12)


def test_same_seed_same_structure_other_seed_differs(copper):
    atoms, fc = copper
    a = thermal(atoms, fc, 300, seed=5)[0]
    b = thermal(atoms, fc, 300, seed=5)[0]
    c = thermal(atoms, fc, 300, seed=6)[0]
    np.testing.assert_array_equal(a.positions, b.positions)
    assert np.abs(a.positions - c.positions).max() > 1e-3


def test_uniform_is_symmetric_and_bounded():
    atoms = bulk("Cu", cubic=True) * 3
    amp = 0.2
    rng = np.random.default_rng(0)
    u = np.array([uniform(atoms, amp, rng).positions - atoms.positions for _ in range(300)])
    assert np.abs(u).max() <= amp
    assert abs(u.mean()) < 0.005  # U(-A, A), not the original scripts' one-sided U(0, A)
    assert u.var() == pytest.approx(amp ** 2 / 3, rel=0.03)
    with pytest.raises(ValueError, match="amplitude"):
        uniform(atoms, -0.1, rng)


@pytest.fixture(scope="module")
def end_members(demo_dir):
    return {0.0: load_phonopy(demo_dir / "force_constants" / "gfn2-xtb_x0.yaml"),
            1.0: load_phonopy(demo_dir / "force_constants" / "gfn2-xtb_x1.yaml")}


def test_solid_solution_force_constants_and_masses(system, end_members):
    ends = end_members
    atoms = system.random_solid_solution(0.5, np.random.default_rng(3))
    fc = supercell_force_constants(ends, atoms, 0.5)
    assert fc.shape == (40, 40, 3, 3)
    np.testing.assert_allclose(fc.sum(axis=1), 0, atol=1e-8)  # acoustic sum rule kept
    np.testing.assert_allclose(fc, fc.transpose(1, 0, 3, 2), atol=1e-8)  # symmetric
    ph = harmonic_phonopy(atoms, fc)
    np.testing.assert_allclose(ph.supercell.masses, atoms.get_masses())
    # An end member's supercell force constants, mapped onto our atom order, give the
    # parent's phonons at the 8 q-points commensurate with the 2x2x2 supercell.
    pure = system.random_solid_solution(1.0, np.random.default_rng(0))
    gamma = harmonic_phonopy(pure, supercell_force_constants(ends, pure, 1.0))
    gamma.run_qpoints([[0, 0, 0]])
    qpts = [[a, b, c] for a in (0, 0.5) for b in (0, 0.5) for c in (0, 0.5)]
    ends[1.0].run_qpoints(qpts)
    np.testing.assert_allclose(np.sort(gamma.get_qpoints_dict()["frequencies"].ravel()),
                               np.sort(ends[1.0].get_qpoints_dict()["frequencies"].ravel()),
                               atol=1e-6)


def test_soft_modes_below_cutoff_are_not_displaced(system, end_members):
    ends = end_members
    atoms = system.random_solid_solution(1.0, np.random.default_rng(0))
    fc = supercell_force_constants(ends, atoms, 1.0)
    rms = {}
    for cut in (0.1, 1.0):
        s = thermal(atoms, fc, 300.0, seed=2, n_samples=50, cutoff_frequency=cut)
        u = np.array([a.positions - atoms.positions for a in s])
        rms[cut] = np.sqrt((u ** 2).sum(-1).mean())
    assert rms[1.0] < rms[0.1]
    assert 0.05 < rms[1.0] < 0.4  # A: a plausible thermal amplitude at 300 K
