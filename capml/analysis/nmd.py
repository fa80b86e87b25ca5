"""Normal-mode decomposition of MD velocities: temperature-renormalised phonons.

The paper's Eqs. 2-4: the mass-weighted velocities of an MD run are projected
onto the harmonic eigenvectors, the power spectrum of each projection is
computed, and a Lorentzian fitted to each spectrum gives the mode's
renormalised frequency omega(T) (peak centre) and linewidth Gamma(T) (full
width at half maximum), both in THz (cycles per ps).

Modes are those of the MD cell itself, i.e. the Gamma-point modes of the
supercell's dynamical matrix. For an ordered supercell of a primitive cell
these are exactly the primitive cell's modes at the commensurate q-points,
folded to Gamma (tested against phonopy); for a disordered supercell they are
the only well-defined modes. Renormalised force constants are rebuilt from the
harmonic eigenvectors and the renormalised frequencies, so an ordered cell's
renormalised dispersion follows from phonopy's Fourier interpolation.

Units: positions A, velocities A/fs, masses amu, frequencies THz, time fs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import units
from scipy import ndimage, optimize, signal

from capml.simulation.phonopy_io import full_force_constants

# omega [rad per ase time unit] -> f [THz]
ASE_TO_THZ = units.fs * 1e3 / (2 * np.pi)
HANN_ENBW_BINS = 1.5  # equivalent noise bandwidth of the Hann window, in bins


@dataclass
class Modes:
    """Harmonic Gamma modes of a supercell (mass-weighted, real, orthonormal)."""

    frequencies: np.ndarray  # [3n] THz, imaginary as negative
    eigenvectors: np.ndarray  # [3n, n, 3] mass-weighted eigenvectors, e[nu] . e[mu] = delta
    masses: np.ndarray  # [n] amu

    @property
    def n_modes(self) -> int:
        return len(self.frequencies)


@dataclass
class Renormalised:
    """Result of fitting each mode's velocity power spectrum."""

    harmonic: np.ndarray  # [m] THz
    frequencies: np.ndarray  # [m] THz, renormalised (peak centre); nan where not fitted
    frequency_errors: np.ndarray  # [m] THz, 1-sigma from the fit covariance
    linewidths: np.ndarray  # [m] THz, FWHM
    linewidth_errors: np.ndarray  # [m] THz
    fitted: np.ndarray  # [m] bool, False for translations and failed fits
    spectrum_frequencies: np.ndarray  # [k] THz
    spectra: np.ndarray  # [m, k] power spectra (arbitrary units, per mode)


def frequencies_from_eigenvalues(eigenvalues: np.ndarray) -> np.ndarray:
    """Frequencies (THz, imaginary as negative) from dynamical-matrix eigenvalues
    in eV / (A^2 amu)."""
    return np.sign(eigenvalues) * np.sqrt(np.abs(eigenvalues)) * ASE_TO_THZ


def gamma_modes(force_constants: np.ndarray, masses: np.ndarray) -> Modes:
    """Modes of the supercell dynamical matrix at Gamma.

    ``force_constants``: [n, n, 3, 3] in eV/A^2 (phonopy's full layout).
    """
    fc = np.asarray(force_constants, dtype=float)
    n = len(masses)
    if fc.shape != (n, n, 3, 3):
        raise ValueError(f"force constants of shape {fc.shape}: expected the full "
                         f"({n}, {n}, 3, 3) array of the MD cell")
    inv_sqrt_m = np.repeat(1.0 / np.sqrt(masses), 3)
    dyn = fc.transpose(0, 2, 1, 3).reshape(3 * n, 3 * n) * np.outer(inv_sqrt_m, inv_sqrt_m)
    dyn = 0.5 * (dyn + dyn.T)
    w2, vec = np.linalg.eigh(dyn)
    return Modes(frequencies_from_eigenvalues(w2), vec.T.reshape(3 * n, n, 3).copy(),
                 np.asarray(masses, dtype=float))


def modes_from_phonopy(phonon) -> Modes:
    """Gamma modes of a phonopy object's supercell (compact force constants allowed)."""
    return gamma_modes(full_force_constants(phonon), phonon.supercell.masses)


def project_velocities(velocities: np.ndarray, modes: Modes) -> np.ndarray:
    """Mode velocities Qdot_nu(t) = sum_j sqrt(m_j) e_nu(j) . v_j(t).

    ``velocities``: [n_frames, n, 3] in A/fs, atoms in the modes' order.
    Returns [n_modes, n_frames] in sqrt(amu) A/fs; 1/2 Qdot^2 is the mode's kinetic energy.
    """
    v = np.asarray(velocities, dtype=float)
    if v.ndim != 3 or v.shape[1:] != modes.eigenvectors.shape[1:]:
        raise ValueError(f"velocities of shape {v.shape}: expected "
                         f"(n_frames, {modes.eigenvectors.shape[1]}, 3)")
    weighted = v * np.sqrt(modes.masses)[None, :, None]
    return np.einsum("mjc,tjc->mt", modes.eigenvectors, weighted, optimize=True)


def power_spectra(series: np.ndarray, dt_fs: float, n_segments: int = 1,
                  window: str = "hann") -> tuple[np.ndarray, np.ndarray]:
    """One-sided power spectral densities of each row of ``series`` [m, t].

    Welch's method (scipy) with ``n_segments`` non-overlapping windowed segments
    (1: one windowed periodogram, the finest resolution, 1/(total time)).
    Returns (frequencies in THz [k], spectra [m, k]).
    """
    series = np.atleast_2d(series)
    n = series.shape[-1] // max(int(n_segments), 1)
    if n < 8:
        raise ValueError(f"{series.shape[-1]} frames in {n_segments} segments: too short "
                         "for a power spectrum")
    f, p = signal.welch(series, fs=1.0 / dt_fs, window=window, nperseg=n, noverlap=0,
                        detrend="constant", axis=-1)
    return f * 1e3, p  # 1/fs -> THz


def lorentzian(f, centre, fwhm, height, background):
    """Lorentzian peak of full width ``fwhm`` at ``centre`` on a constant background."""
    half = 0.5 * fwhm
    return height * half**2 / ((f - centre) ** 2 + half**2) + background


def _lorentzian_jacobian(f, centre, fwhm, height, background):
    half = 0.5 * fwhm
    den = (f - centre) ** 2 + half**2
    shape = half**2 / den
    return np.stack([height * shape * 2 * (f - centre) / den,
                     height * half * (f - centre) ** 2 / den**2,
                     shape, np.ones_like(f)], axis=-1)


def damped_oscillator(f, centre, fwhm, height, background):
    """Velocity power spectrum of a damped harmonic oscillator of frequency ``centre``
    and damping ``fwhm`` (its exact full width at half maximum), peak ``height``.
    A Lorentzian near the peak; unlike it, exact for a Langevin-damped mode, whose
    spectrum is skewed to high frequencies (a Lorentzian fit then sits high)."""
    n = (f * fwhm) ** 2
    return height * n / ((centre**2 - f**2) ** 2 + n) + background


def _damped_oscillator_jacobian(f, centre, fwhm, height, background):
    d2 = centre**2 - f**2
    n = (f * fwhm) ** 2
    den = d2**2 + n
    return np.stack([-4 * height * n * centre * d2 / den**2,
                     2 * height * f**2 * fwhm * d2**2 / den**2,
                     n / den, np.ones_like(f)], axis=-1)


PROFILES = {"lorentzian": (lorentzian, _lorentzian_jacobian),
            "damped_oscillator": (damped_oscillator, _damped_oscillator_jacobian)}


def fit_peak(f: np.ndarray, p: np.ndarray, guess: float | None = None,
             window_thz: float | None = None, n_averaged: int = 1,
             smoothing_thz: float = 0.05, profile: str = "damped_oscillator"
             ) -> tuple[np.ndarray, np.ndarray]:
    """Fit one peak ``profile`` (see PROFILES) to the power spectrum ``p(f)`` around its
    highest peak.

    The fit maximises the Whittle likelihood: a periodogram bin is the true
    spectrum times an exponential variate (a chi^2 with 2 ``n_averaged`` degrees of
    freedom after Welch averaging), so least squares on a raw periodogram chases
    noise spikes while the likelihood does not. Errors are from the Fisher
    information, widened by the Hann window's equivalent noise bandwidth (1.5
    bins) because neighbouring windowed bins are correlated.

    ``guess``/``window_thz``: only peaks within ``window_thz`` of ``guess`` (THz)
    are considered (None: the whole spectrum). Returns (params, errors) with params
    = (centre, fwhm, height, background); raises RuntimeError on failure.
    """
    sel = f > 0
    if guess is not None and window_thz is not None:
        sel &= np.abs(f - guess) <= window_thz
    if profile not in PROFILES:
        raise ValueError(f"profile = {profile!r}: expected one of {sorted(PROFILES)}")
    shape, shape_jacobian = PROFILES[profile]
    if sel.sum() < 5:
        raise RuntimeError("fewer than 5 spectrum points in the fit window")
    fs, ps = f[sel], p[sel]
    df = fs[1] - fs[0]
    scale = ps.max()
    if not scale > 0:
        raise RuntimeError("zero spectrum")
    ps = ps / scale
    # starting values from a smoothed spectrum: raw periodogram bins scatter by 100 %
    smooth = ndimage.gaussian_filter1d(ps, sigma=max(smoothing_thz / df, 1.0), mode="nearest")
    k = int(np.argmax(smooth))
    lo, hi = k, k  # half-maximum span around the smoothed maximum
    while lo > 0 and smooth[lo - 1] >= 0.5 * smooth[k]:
        lo -= 1
    while hi < len(fs) - 1 and smooth[hi + 1] >= 0.5 * smooth[k]:
        hi += 1
    width = max(fs[hi] - fs[lo], 2 * df)
    near = np.abs(fs - fs[k]) <= max(6 * width, 20 * df)  # one peak dominates here
    x, y = fs[near], ps[near]
    floor = max(float(np.median(y)) * 1e-3, 1e-12)

    def nll(theta):
        model = np.maximum(shape(x, *theta), floor)
        jac = shape_jacobian(x, *theta)
        weight = 1.0 / model - y / model**2
        return np.sum(np.log(model) + y / model), weight @ jac

    start = np.array([fs[k], width, smooth[k], 0.01 * smooth[k]])
    bounds = [(x.min(), x.max()), (0.1 * df, 10 * (x.max() - x.min())), (1e-12, None),
              (0.0, None)]
    res = optimize.minimize(nll, start, jac=True, method="L-BFGS-B", bounds=bounds)
    if not np.all(np.isfinite(res.x)):
        raise RuntimeError(f"{profile} fit failed: {res.message}")
    model = np.maximum(shape(x, *res.x), floor)
    jac = shape_jacobian(x, *res.x)
    fisher = n_averaged * (jac / model[:, None]).T @ (jac / model[:, None]) / HANN_ENBW_BINS
    try:
        cov = np.linalg.inv(fisher)
    except np.linalg.LinAlgError as err:
        raise RuntimeError("singular Fisher information") from err
    errors = np.sqrt(np.clip(np.diag(cov), 0, None))
    params = res.x * np.array([1, 1, scale, scale])
    return params, errors * np.array([1, 1, scale, scale])


def renormalise(velocities: np.ndarray, modes: Modes, dt_fs: float, n_segments: int = 1,
                window: str = "hann", min_frequency: float = 0.05,
                window_thz: float | None = None, profile: str = "damped_oscillator"
                ) -> Renormalised:
    """Renormalised frequencies and linewidths of every mode from an MD run.

    ``velocities``: [n_frames, n, 3] A/fs at spacing ``dt_fs`` (equilibrated frames).
    Modes with |harmonic frequency| < ``min_frequency`` THz (the translations) are
    not fitted. ``window_thz``: search the peak within this distance of the
    harmonic frequency (None: anywhere, which suits strongly anharmonic and
    imaginary harmonic modes). ``profile``: the peak shape fitted (PROFILES).
    """
    q_dot = project_velocities(velocities, modes)
    f, spectra = power_spectra(q_dot, dt_fs, n_segments=n_segments, window=window)
    m = modes.n_modes
    out = {k: np.full(m, np.nan) for k in ("freq", "dfreq", "width", "dwidth")}
    fitted = np.zeros(m, dtype=bool)
    for nu in range(m):
        harmonic = modes.frequencies[nu]
        if abs(harmonic) < min_frequency:
            continue
        try:
            params, errors = fit_peak(f, spectra[nu], guess=abs(harmonic), window_thz=window_thz,
                                      n_averaged=n_segments, profile=profile)
        except (RuntimeError, ValueError):
            continue
        out["freq"][nu], out["width"][nu] = params[0], params[1]
        out["dfreq"][nu], out["dwidth"][nu] = errors[0], errors[1]
        fitted[nu] = True
    return Renormalised(modes.frequencies.copy(), out["freq"], out["dfreq"], out["width"],
                        out["dwidth"], fitted, f, spectra)


def degenerate_groups(frequencies: np.ndarray, tol_thz: float = 1e-3) -> list[np.ndarray]:
    """Index groups of (sorted) modes whose frequencies agree within ``tol_thz``."""
    order = np.argsort(frequencies)
    groups, current = [], [order[0]]
    for a, b in zip(order[:-1], order[1:]):
        if frequencies[b] - frequencies[a] <= tol_thz:
            current.append(b)
        else:
            groups.append(np.array(current))
            current = [b]
    groups.append(np.array(current))
    return groups


def average_degenerate(values: np.ndarray, harmonic: np.ndarray, tol_thz: float = 1e-3
                       ) -> np.ndarray:
    """Mean of ``values`` over each harmonic degenerate subspace (nan-aware): a
    symmetric crystal's degenerate modes share one renormalised frequency."""
    out = np.array(values, dtype=float)
    for g in degenerate_groups(harmonic, tol_thz):
        vals = out[g]
        if np.isfinite(vals).any():
            out[g] = np.nanmean(vals)
    return out


def average_displacement(positions: np.ndarray, reference: np.ndarray,
                         masses: np.ndarray) -> float:
    """RMS over atoms (A) of the time-averaged displacement of [frames, atoms, 3] unwrapped
    ``positions`` from ``reference`` [atoms, 3], the centre-of-mass drift removed.

    Normal modes of the reference describe the motion only while the MD oscillates about it:
    for a cell that stays (or is dynamically stabilised) there, this is the noise of the time
    average, a few hundredths of an A; a cell that rolls into another minimum moves it by
    tenths of an A or more.
    """
    d = positions.mean(axis=0) - reference
    d -= (masses[:, None] * d).sum(axis=0) / masses.sum()
    return float(np.sqrt((d ** 2).sum(axis=1).mean()))


def renormalised_force_constants(modes: Modes, frequencies_thz: np.ndarray) -> np.ndarray:
    """Force constants [n, n, 3, 3] (eV/A^2) whose Gamma modes are the harmonic
    eigenvectors with the given frequencies (THz; nan keeps the harmonic value)."""
    f = np.where(np.isfinite(frequencies_thz), frequencies_thz, modes.frequencies)
    w2 = np.sign(f) * (f / ASE_TO_THZ) ** 2
    n = len(modes.masses)
    e = modes.eigenvectors.reshape(len(f), 3 * n)
    dyn = (e.T * w2) @ e
    sqrt_m = np.repeat(np.sqrt(modes.masses), 3)
    fc = dyn * np.outer(sqrt_m, sqrt_m)
    return fc.reshape(n, 3, n, 3).transpose(0, 2, 1, 3).copy()
