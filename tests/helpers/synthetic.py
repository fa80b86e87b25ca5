"""Synthetic MD velocities with known mode frequencies and linewidths: the ground truth
against which normal-mode analyses (capml.analysis.nmd, DynaPhoPy) are validated in tests
and bench/nmd.py."""

from __future__ import annotations

import numpy as np
from ase import units
from scipy.linalg import expm

from capml.analysis.nmd import Modes


def langevin_mode_velocities(f_thz, fwhm_thz, n_frames, dt_fs, temperature, rng):
    """Mode velocities [m, t] (sqrt(amu) A/fs) of Langevin oscillators
    x'' = -w^2 x - g x' + noise at ``temperature`` K, sampled exactly per frame; the
    velocity spectrum is the damped-oscillator profile of centre f, FWHM g / 2 pi."""
    w = 2 * np.pi * np.asarray(f_thz) * 1e-3  # rad/fs
    g = 2 * np.pi * np.asarray(fwhm_thz) * 1e-3
    sigma_v = np.sqrt(units.kB * temperature) * units.fs  # sqrt(kT / amu) in A/fs
    m = len(w)
    trans, chol = np.empty((m, 2, 2)), np.empty((m, 2, 2))
    for k in range(m):
        trans[k] = expm(np.array([[0.0, 1.0], [-w[k] ** 2, -g[k]]]) * dt_fs)
        stationary = np.diag([1 / w[k] ** 2, 1.0])
        chol[k] = np.linalg.cholesky(stationary - trans[k] @ stationary @ trans[k].T)
    x, v = rng.normal(size=m) / w, rng.normal(size=m)
    noise = np.einsum("mij,tmj->tmi", chol, rng.normal(size=(n_frames, m, 2)))
    out = np.empty((m, n_frames))
    a, b, c, d = (trans[:, i, j] for i in (0, 1) for j in (0, 1))
    for t in range(n_frames):
        out[:, t] = v
        x, v = a * x + b * v + noise[t, :, 0], c * x + d * v + noise[t, :, 1]
    return out * sigma_v


def cartesian_velocities(modes: Modes, q_dot: np.ndarray, which: np.ndarray) -> np.ndarray:
    """Atomic velocities [t, n, 3] (A/fs) of mode velocities ``q_dot`` [len(which), t] on
    the modes ``which`` (inverse of nmd.project_velocities)."""
    return np.einsum("mt,mjc->tjc", q_dot, modes.eigenvectors[which]) \
        / np.sqrt(modes.masses)[None, :, None]
