"""Renormalised phonons with real anharmonicity and a known answer: capml's MD engine on an
Einstein crystal of independent quartic oscillators, analysed by ``task=renormalised_phonons``.

Each Cartesian component of each atom is an oscillator V = k u^2 / 2 + g u^4 / 4 whose
classical frequency f(E) rises with its energy E (tests/helpers/quartic.py: 1 / period,
the period by quadrature). The harmonic force constants are k on the diagonal, so the
Gamma modes of a 2x2x2 supercell of a CsCl-type AgCu cell sit at two harmonic frequencies
(Ag 3.01, Cu 3.92 THz), 24-fold degenerate each, and the dynamical matrix is diagonal:
numpy's eigh returns the Cartesian basis, so each mode is one oscillator.

What is compared, and why. The run is at zero friction (capml's Langevin integrator is then
velocity Verlet) from the sites with Maxwell-Boltzmann velocities at T: each oscillator
keeps the energy E_i = m v_i(0)^2 / 2 it starts with, so its velocity is strictly periodic
and its spectrum is a line at f(E_i) plus odd harmonics at 3 f, 5 f, ... far outside the
fit window. For such a line the maximum, the centroid and a single-peak fit are the same
quantity, f(E_i), which is therefore what each mode's fitted frequency is compared with,
within 0.3 periodogram bins (0.03 THz at 10 ps): a deterministic line is located to about
0.2 bins, the Whittle model's random-phase line missing the data's phase-dependent
sidelobes (Verlet's own O(dt^2) frequency error, 2e-4 relative here, is far below). The
energies are a Boltzmann sample, E = (kT/2) chi^2_1, so each degenerate-group average the
task reports is the mean of f over that sample, the ensemble's frequency to within its
sampling error. A thermostat would instead make each E wander, broadening and shifting
the line (motional narrowing) away from any static mixture of f(E) unless its friction is
far below the frequency spread, which would need a far longer run.

k = 4 eV/A^2 and g = 60 eV/A^4 at 300 K shift the modes by 0.01-0.6 THz (median 0.04,
mean 0.1 THz).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from ase.units import kB
from conftest import compose_cfg
from helpers.quartic import IndependentQuartic, frequency
from phonopy import Phonopy
from scipy import special

from capml.analysis import nmd
from capml.simulation import md
from capml.simulation.forces import make_evaluator
from capml.simulation.phonopy_io import save_phonopy, supercell_atoms
from capml.simulation.trajectory import read_trajectory
from capml.tasks import dispatch

K, G, T = 4.0, 60.0, 300.0  # eV/A^2, eV/A^4, K
DT_FS, DURATION_PS, STRIDE = 4.0, 10.0, 2


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    """(modes.csv, trajectory, phonopy) of the renormalised_phonons task on the run."""
    from phonopy.structure.atoms import PhonopyAtoms

    sim = tmp_path_factory.mktemp("quartic")
    unit = PhonopyAtoms(symbols=["Ag", "Cu"], cell=3.0 * np.eye(3),
                        scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5]])
    phonon = Phonopy(unit, supercell_matrix=np.diag([2, 2, 2]), primitive_matrix=None)
    n = len(phonon.supercell)
    fc = np.zeros((n, n, 3, 3))
    fc[np.arange(n), np.arange(n)] = K * np.eye(3)  # the harmonic part, exactly
    phonon.force_constants = fc
    save_phonopy(phonon, sim / "phonons" / "einstein" / "phonopy.yaml")

    atoms = supercell_atoms(phonon)
    sites = atoms.positions.copy()
    settings = md.LangevinSettings(timestep_fs=DT_FS, friction_per_fs=0.0,
                                   n_steps=round(DURATION_PS * 1e3 / DT_FS), stride=STRIDE,
                                   zero_momentum=False)
    md.run([md.Replica("einstein_T300K", atoms, T, seed=3,
                       meta={"x": 1.0, "source": "einstein"})],
           lambda cells: make_evaluator(cells, lambda: IndependentQuartic(sites, K, G)),
           settings, sim / "md", level="quartic")
    out = sim / "analysis"
    dispatch("analyze", compose_cfg("analyze", [
        "task=renormalised_phonons", f"task.simulation_dir={sim}", "task.equilibration_ps=0",
        "task.mesh=[2,2,2]", "task.npoints=3"], out))
    table = pd.read_csv(out / "einstein_T300K" / "modes.csv")
    return table, read_trajectory(sim / "md" / "einstein_T300K.h5"), phonon


def test_each_mode_is_found_at_its_own_anharmonic_frequency(analysed):
    table, traj, phonon = analysed
    modes = nmd.modes_from_phonopy(phonon)
    e = np.abs(modes.eigenvectors.reshape(modes.n_modes, -1))
    assert np.allclose(e.max(axis=1), 1.0)  # the Cartesian basis: one oscillator per mode
    dof = e.argmax(axis=1)
    m = np.repeat(traj.masses, 3)[dof]
    u0 = (traj.positions[0] - supercell_atoms(phonon).positions).ravel()[dof]
    energy = 0.5 * m * traj.velocities[0].ravel()[dof] ** 2 \
        * md.AMU_TO_EV_FS2_A2 + 0.5 * K * u0**2 + 0.25 * G * u0**4
    expected = np.array([frequency(e, K, G, mass) for e, mass in zip(energy, m)])
    harmonic = table.harmonic_thz.to_numpy()
    np.testing.assert_allclose(harmonic, np.sqrt(K / m) * nmd.ASE_TO_THZ, rtol=1e-9)
    assert table.fitted.all()
    got = table.renormalised_thz.to_numpy()
    np.testing.assert_allclose(got, expected, atol=0.3 / DURATION_PS)  # 0.3 bins
    shift = expected - harmonic
    far = shift > 0.6 / DURATION_PS  # modes where the harmonic answer is twice the tolerance off
    assert far.sum() >= 12 and shift.max() > 0.3
    assert np.all(np.abs(got - harmonic)[far] > 0.3 / DURATION_PS)
    assert np.all(table.linewidth_thz < 1.0 / DURATION_PS)  # undamped: no width beyond 1/T


def test_degenerate_average_is_the_boltzmann_ensemble_frequency(analysed):
    """Each species' group average over its 24 modes against the mean of f(E) over the
    ensemble E = (kT/2) chi^2_1 (Gauss-Laguerre quadrature), within 3 standard errors of a
    24-oscillator sample; the shift from harmonic exceeds 3 of them (a sample of 24 E = (kT/2)
    chi^2_1 cannot resolve it better: the ratio is sqrt(24 / 2) in the weakly anharmonic limit)."""
    table, traj, _ = analysed
    x, weight = special.roots_genlaguerre(60, -0.5)  # rho(y) ~ y^-1/2 e^-y, y = E / kT
    energy = x * kB * T
    for mass in np.unique(traj.masses):
        f = frequency(energy, K, G, float(mass))
        mean = np.sum(weight * f) / np.sum(weight)
        sd = np.sqrt(np.sum(weight * (f - mean) ** 2) / np.sum(weight))
        f_h = np.sqrt(K / mass) * nmd.ASE_TO_THZ
        group = table.renormalised_sym_thz[np.isclose(table.harmonic_thz, f_h)].to_numpy()
        assert len(group) == 24 and np.ptp(group) < 1e-9  # one degenerate group
        assert abs(group[0] - mean) < 3 * sd / np.sqrt(len(group))
        assert mean - f_h > 3 * sd / np.sqrt(len(group))
