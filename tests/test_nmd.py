"""Normal-mode decomposition: modes equal phonopy's, synthetic trajectories with known
frequencies and linewidths are recovered, renormalised force constants round-trip."""

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from helpers.synthetic import cartesian_velocities, langevin_mode_velocities

from capml.analysis import nmd
from capml.simulation import phonons
from capml.simulation.forces import make_evaluator
from capml.simulation.phonopy_io import full_force_constants


@pytest.fixture(scope="module")
def copper():
    """Cu fcc conventional cell (4 atoms) in a 2x2x2 supercell (32 atoms), EMT."""
    cu = bulk("Cu", "fcc", a=3.6, cubic=True)
    return phonons.force_constants(cu, lambda cells: make_evaluator(cells, EMT),
                                   supercell_matrix=[2, 2, 2], primitive_matrix="auto")


def test_supercell_gamma_modes_are_phonopys_commensurate_modes(copper):
    from phonopy.harmonic.dynmat_to_fc import get_commensurate_points

    modes = nmd.modes_from_phonopy(copper)
    smat = np.rint(np.linalg.inv(copper.primitive_matrix) @ copper.supercell_matrix).astype(int)
    q = get_commensurate_points(smat)
    copper.run_qpoints(q)
    expected = np.sort(copper.get_qpoints_dict()["frequencies"].ravel())
    assert len(expected) == modes.n_modes == 96
    np.testing.assert_allclose(np.sort(modes.frequencies), expected, atol=1e-6)
    e = modes.eigenvectors.reshape(96, 96)
    np.testing.assert_allclose(e @ e.T, np.eye(96), atol=1e-10)


def harmonic_velocities(modes, amplitudes, frequencies_thz, phases, n_frames, dt_fs):
    """Velocities [t, n, 3] of undamped normal modes (cosines) with known frequencies."""
    w = 2 * np.pi * np.asarray(frequencies_thz) * 1e-3  # rad/fs
    t = np.arange(n_frames) * dt_fs
    q_dot = -amplitudes[:, None] * w[:, None] * np.sin(w[:, None] * t + phases[:, None])
    return cartesian_velocities(modes, q_dot, np.arange(len(w)))


def test_harmonic_trajectory_gives_back_its_frequencies(copper):
    modes = nmd.modes_from_phonopy(copper)
    rng = np.random.default_rng(0)
    true = np.abs(modes.frequencies) + rng.uniform(-0.3, 0.3, modes.n_modes)  # off-harmonic
    amplitudes = rng.uniform(0.5, 1.5, modes.n_modes)
    v = harmonic_velocities(modes, amplitudes, true, rng.uniform(0, 2 * np.pi, modes.n_modes),
                            n_frames=10000, dt_fs=5.0)  # 50 ps
    res = nmd.renormalise(v, modes, dt_fs=5.0)
    moving = np.abs(modes.frequencies) > 0.05
    assert res.fitted[moving].all() and not res.fitted[~moving].any()
    assert np.abs(res.frequencies[moving] - true[moving]).max() < 0.05
    assert np.all(res.linewidths[moving] < 0.1)  # undamped: window-limited width only


def test_damped_modes_give_their_linewidth(copper):
    modes = nmd.modes_from_phonopy(copper)
    chosen = np.where(np.abs(modes.frequencies) > 1.0)[0][::12]
    sub = nmd.Modes(modes.frequencies[chosen], modes.eigenvectors[chosen], modes.masses)
    f = np.abs(sub.frequencies)
    q_dot = langevin_mode_velocities(f, np.full(len(f), 0.4), 20000, 5.0, 300.0,
                                     np.random.default_rng(1))  # FWHM 0.4 THz
    v = cartesian_velocities(sub, q_dot, np.arange(len(f)))
    res = nmd.renormalise(v, sub, dt_fs=5.0, n_segments=8)
    assert res.fitted.all()
    np.testing.assert_allclose(res.frequencies, np.abs(sub.frequencies), atol=0.05)
    np.testing.assert_allclose(np.median(res.linewidths), 0.4, rtol=0.1)


def test_renormalised_force_constants_round_trip(copper):
    fc = full_force_constants(copper)
    modes = nmd.gamma_modes(fc, copper.supercell.masses)
    np.testing.assert_allclose(nmd.renormalised_force_constants(
        modes, np.full(modes.n_modes, np.nan)), fc, atol=1e-8)
    shifted = nmd.renormalised_force_constants(modes, modes.frequencies * 1.1)
    np.testing.assert_allclose(nmd.gamma_modes(shifted, modes.masses).frequencies,
                               np.sort(modes.frequencies * 1.1), atol=1e-6)


def test_wrong_velocity_shape_is_a_clear_error(copper):
    modes = nmd.modes_from_phonopy(copper)
    with pytest.raises(ValueError, match=r"expected \(n_frames, 32, 3\)"):
        nmd.project_velocities(np.zeros((10, 31, 3)), modes)


def test_average_displacement_tells_oscillation_about_the_reference_from_leaving_it():
    rng = np.random.default_rng(0)
    reference = rng.uniform(0, 10, (20, 3))
    masses = rng.uniform(10, 120, 20)
    t = np.arange(2000)[:, None, None]
    phases = rng.uniform(0, 2 * np.pi, (1, 20, 3))
    oscillating = reference + 0.3 * np.sin(2 * np.pi * t / 97 + phases)  # 0.3 A amplitude
    drift = 1e-3 * t * np.array([1.0, -0.5, 0.2])  # a whole-cell drift is not a displacement
    assert nmd.average_displacement(oscillating + drift, reference, masses) < 0.02
    moved = oscillating.copy()
    moved[1000:, :5] += np.array([0.8, 0.0, 0.0])  # five atoms hop to another site half-way
    got = nmd.average_displacement(moved, reference, masses)
    assert 0.15 < got < 0.2  # sqrt(5/20) x 0.4 A = 0.2 A, less the centre-of-mass part


def test_no_stability_verdict_for_a_run_that_left_its_reference():
    from capml.analysis.stabilisation import verdict

    row = {"n_imaginary_harmonic": 48, "n_imaginary_renormalised": 0, "temperature": 300.0,
           "average_displacement_a": 0.05, "max_average_displacement_a": 0.3}
    assert verdict(row).startswith("dynamically stabilised: all 48")
    assert verdict({**row, "average_displacement_a": 0.85}).startswith(
        "left the reference structure: time-averaged displacement 0.85 A")
    assert verdict({**row, "n_imaginary_renormalised": 3}).startswith("unstable: 3 of 48")
