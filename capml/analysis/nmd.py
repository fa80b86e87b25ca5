"""Normal-mode decomposition of MD velocities: temperature-renormalised phonons.

The paper's Eqs. 2-4: the mass-weighted velocities of an MD run are projected
onto the harmonic eigenvectors, the power spectrum of each projection is
computed, and one line fitted to each spectrum gives the mode's renormalised
frequency omega(T) and linewidth Gamma(T) (full width at half maximum), both in
THz (cycles per ps). The default line is a damped harmonic oscillator's, exact
for a Langevin-damped mode and peaked at its frequency (a Lorentzian, the other
profile, is DynaPhoPy's). The fit is maximum likelihood on the raw periodogram
of the whole run with the finite length modelled exactly, so the widths carry no
window broadening and the reported errors are the likelihood's.

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

import itertools
from dataclasses import dataclass

import numpy as np
from ase import units
from scipy import ndimage

from capml.simulation.phonopy_io import full_force_constants

# omega [rad per ase time unit] -> f [THz]
ASE_TO_THZ = units.fs * 1e3 / (2 * np.pi)


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


def periodograms(series: np.ndarray, dt_fs: float, n_segments: int = 1
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Raw periodograms of each row of ``series`` [m, t], averaged over ``n_segments``
    non-overlapping segments of n = t // n_segments frames.

    No taper: the fit models the finite length exactly (``expected_periodogram``), where a
    window would only widen the lines and correlate neighbouring bins. Returns the Fourier
    frequencies 0 < f < Nyquist in THz [k] and the spectra [m, k] = mean over segments of
    |DFT|^2 / n, in the series' units squared (white noise of unit variance gives 1).
    """
    series = np.atleast_2d(np.asarray(series, dtype=float))
    k_seg = max(int(n_segments), 1)
    n = series.shape[-1] // k_seg
    if n < 8:
        raise ValueError(f"{series.shape[-1]} frames in {n_segments} segments: too short "
                         "for a power spectrum")
    pieces = series[:, : n * k_seg].reshape(len(series), k_seg, n)
    dft = np.fft.rfft(pieces, axis=-1)[..., 1:(n + 1) // 2]  # zero and Nyquist left out
    f = np.arange(1, (n + 1) // 2) / (n * dt_fs) * 1e3  # 1/fs -> THz
    return f, (np.abs(dft) ** 2).mean(axis=1) / n


PROFILES = ("damped_oscillator", "lorentzian")


def _line_terms(centre_thz: float, fwhm_thz: float, profile: str):
    """A unit-variance line's autocovariance R(t) = 1/2 sum_s a_s exp(lam_s t) over the pair
    s = +, - (lam in rad/ps), and d(a_s)/d(centre, fwhm), d(lam_s)/d(centre, fwhm) [2, 2].

    damped_oscillator: the velocity of x'' = -w0^2 x - g x' + white noise, w0 = 2 pi centre,
    g = 2 pi fwhm (the exact FWHM of its spectrum, which peaks at centre); overdamped lines
    (fwhm > 2 centre) are included. lorentzian: a damped cosine exp(-g|t|/2) cos(w0 t),
    Lorentzians of FWHM fwhm at +-centre (DynaPhoPy's profile).
    """
    two_pi = 2 * np.pi
    w0, g = two_pi * centre_thz, two_pi * fwhm_thz
    sign = np.array([1.0, -1.0])
    if profile == "damped_oscillator":
        w1 = np.sqrt(complex(w0**2 - g**2 / 4))  # imaginary when overdamped
        if abs(w1) < 1e-9 * w0:  # critical damping: the limit of either side
            w1 = complex(1e-9 * w0)
        dw1 = np.array([two_pi * w0 / w1, -two_pi * g / (4 * w1)])
        b = g / (2 * w1)
        db = np.array([-b / w1 * dw1[0], two_pi / (2 * w1) - b / w1 * dw1[1]])
    else:
        w1, dw1, b, db = complex(w0), np.array([two_pi, 0.0]), 0.0, np.zeros(2)
    a = 1 + 1j * sign * b
    lam = -g / 2 + 1j * sign * w1
    da = 1j * db[:, None] * sign[None, :]
    dlam = np.array([0.0, -np.pi])[:, None] + 1j * dw1[:, None] * sign[None, :]
    return a, lam, da, dlam


def expected_periodogram(f_thz: np.ndarray, dt_fs: float, n: int, centre_thz: float,
                         fwhm_thz: float, profile: str = "damped_oscillator"
                         ) -> tuple[np.ndarray, np.ndarray]:
    """E[|DFT|^2 / n] at ``f_thz`` of n samples at spacing ``dt_fs`` of a unit-variance
    line (``_line_terms``), and its derivatives [2, k] with respect to (centre, fwhm).

    The sum over lags of (1 - |tau|/n) R(tau dt) exp(-i w tau dt) in closed form: exact for
    the sampled series, aliasing and the finite length's Fejer broadening (1/(pi T) for a
    Lorentzian) included, so that a Whittle fit to it is unbiased at any length (the
    debiased Whittle likelihood, Sykulski et al., Biometrika 106, 251 (2019)).
    """
    a, lam, da, dlam = _line_terms(centre_thz, fwhm_thz, profile)
    dt = dt_fs * 1e-3  # ps
    s = (lam[:, None] - 2j * np.pi * np.asarray(f_thz)[None, :]) * dt  # [2, k]
    z, zn, omz = np.exp(s), np.exp(n * s), -np.expm1(s)
    h = z / omz - z * (1 - zn) / (n * omz**2)  # sum_{tau=1}^{n-1} (1 - tau/n) z^tau
    dh = 1 / omz**2 - ((1 - (n + 1) * zn) / omz**2 + 2 * z * (1 - zn) / omz**3) / n
    value = 1 + np.real(a @ h)
    grad = np.real(da @ h + (dlam * a[None, :]) @ (dh * z) * dt)
    return value, grad


def _start_values(fs, ps, smoothing_thz):
    """(peak index, half-maximum width in THz) of the smoothed spectrum: raw periodogram
    bins scatter by 100 %, so the starting values come from a smoothed one."""
    df = fs[1] - fs[0]
    smooth = ndimage.gaussian_filter1d(ps, sigma=max(smoothing_thz / df, 1.0), mode="nearest")
    k = int(np.argmax(smooth))
    lo, hi = k, k
    while lo > 0 and smooth[lo - 1] >= 0.5 * smooth[k]:
        lo -= 1
    while hi < len(fs) - 1 and smooth[hi + 1] >= 0.5 * smooth[k]:
        hi += 1
    return k, max(fs[hi] - fs[lo], 2 * df)


def _model(x, dt_fs, n, params, profile):
    """Expected periodogram variance * line + background at ``x`` and its Jacobian [4, k]
    with respect to params = (centre, fwhm, variance, background)."""
    d, dd = expected_periodogram(x, dt_fs, n, params[0], params[1], profile)
    m = params[2] * d + params[3]
    return m, np.vstack([params[2] * dd, d, np.ones_like(d)])


def _whittle_fit(x, y, dt_fs, n, n_averaged, profile, start, bounds, max_iter=100):
    """Maximum Whittle likelihood params of ``y`` (periodogram at ``x``) for ``_model``,
    from ``start`` within ``bounds`` [4, 2], by Fisher scoring (the Newton step with the
    expected Hessian, halved until the likelihood rises; parameters the score pushes
    against a bound stay there)."""
    scale = np.abs(np.asarray(start, dtype=float)) + 1e-300  # fitted relative to the start

    def nll(m):
        return n_averaged * np.sum(np.log(m) + y / m) if np.all(m > 0) else np.inf

    lo, hi = (np.asarray(bounds, dtype=float) / scale[:, None]).T
    theta = np.asarray(start, dtype=float) / scale
    m, jac = _model(x, dt_fs, n, theta * scale, profile)
    jac = jac * scale[:, None]
    value = nll(m)
    for _ in range(max_iter):
        fisher = n_averaged * (jac / m) @ (jac / m).T
        score = n_averaged * jac @ (y / m**2 - 1 / m)
        free = ~(((theta <= lo) & (score < 0)) | ((theta >= hi) & (score > 0)))
        step = np.zeros(4)
        step[free] = np.linalg.lstsq(fisher[np.ix_(free, free)], score[free], rcond=None)[0]
        if score @ step < 1e-10:  # twice the expected rise of the log-likelihood
            break
        for _ in range(30):
            trial = np.clip(theta + step, lo, hi)
            m_t, jac_t = _model(x, dt_fs, n, trial * scale, profile)
            value_t = nll(m_t)
            if value_t <= value:
                break
            step = step / 2
        else:
            break  # no step raises the likelihood: at the maximum to rounding
        theta, m, jac, value = trial, m_t, jac_t * scale[:, None], value_t
    return theta * scale


def _bias(x, dt_fs, n, n_averaged, params, profile, m, jac, cov, free):
    """First-order (Cox & Snell 1968) bias of the maximum-likelihood ``params`` for
    independent bins with gamma-distributed periodograms of mean m: b = -1/2 C J W d with
    W = n_averaged / m^2, d_k = tr(C H_k), H_k the Hessian of m_k and C the inverse Fisher
    information of the parameters not at a bound (``free``; the others are held fixed).
    For a line ~ pi fwhm T bins wide it is of relative order 1 / (fwhm T): +3-10 % on the
    width at fwhm T ~ 8-2."""
    h = np.zeros((4, 4, len(x)))
    for i, step in ((0, 1e-5 * params[0]), (1, 1e-4 * params[1])):
        up, down = params.copy(), params.copy()
        up[i] += step
        down[i] -= step
        h[i] = (_model(x, dt_fs, n, up, profile)[1] - _model(x, dt_fs, n, down, profile)[1]) \
            / (2 * step)
    h[2, :2] = h[:2, 2]  # d2m / d(variance) d(centre, fwhm), from the variance row
    h = 0.5 * (h + h.transpose(1, 0, 2))
    c = np.zeros((4, 4))
    c[np.ix_(free, free)] = np.linalg.inv(np.linalg.inv(cov)[np.ix_(free, free)])
    d = np.einsum("rt,rtk->k", c, h)
    return -0.5 * n_averaged * c @ (jac / m**2) @ d


def fit_peak(f: np.ndarray, p: np.ndarray, dt_fs: float, n: int, guess: float | None = None,
             window_thz: float | None = None, n_averaged: int = 1,
             smoothing_thz: float = 0.05, profile: str = "damped_oscillator"
             ) -> tuple[np.ndarray, np.ndarray]:
    """Fit one line ``profile`` (PROFILES) plus a white background to the periodogram
    ``p(f)`` (``periodograms`` of segments of ``n`` frames at ``dt_fs``, averaged over
    ``n_averaged``) around its highest peak.

    Maximum Whittle likelihood on the exact expected periodogram m (expected_periodogram):
    an averaged periodogram bin is m times a chi^2 variate of 2 ``n_averaged`` degrees of
    freedom over 2 n_averaged, independent between Fourier frequencies, so the likelihood
    is n_averaged sum(log m + p/m), the errors are the inverse Fisher information's,
    n_averaged sum (dm/m)(dm/m)^T, and the estimate's first-order bias (``_bias``) is
    taken off. Bins within 8 FWHM of the peak (at least 30) are fitted: once from the
    smoothed spectrum's peak, then again on the window of the fitted line.

    ``guess``/``window_thz``: only peaks within ``window_thz`` of ``guess`` (THz) are
    considered (None: the whole spectrum). Returns (params, errors), params = (centre THz,
    fwhm THz, variance of the line in p's units, background in p's units); raises
    RuntimeError on failure.
    """
    if profile not in PROFILES:
        raise ValueError(f"profile = {profile!r}: expected one of {sorted(PROFILES)}")
    sel = f > 0
    if guess is not None and window_thz is not None:
        sel &= np.abs(f - guess) <= window_thz
    if sel.sum() < 5:
        raise RuntimeError("fewer than 5 spectrum points in the fit window")
    if not p[sel].max() > 0:
        raise RuntimeError("zero spectrum")
    df = f[1] - f[0]
    k, width = _start_values(f[sel], p[sel], max(smoothing_thz, 2 * df))
    params = np.array([f[sel][k], width, 0.0, 0.0])
    for _ in range(2):
        near = np.abs(f - params[0]) <= max(8 * params[1], 30 * df)
        x, y = f[near], p[near]
        v0, b_max = max(2 * float(np.sum(y)) / n, 1e-300), 1e3 * float(np.mean(y))
        bounds = np.array([(max(x.min(), 0.5 * df), x.max()),
                           (1e-3 * df, 10 * (x.max() - x.min())), (1e-3 * v0, 10 * v0),
                           (-b_max, b_max)])  # a signed nuisance: unbiased at 0
        params = _whittle_fit(x, y, dt_fs, n, n_averaged, profile,
                              [params[0], params[1], v0, 1e-6 * b_max], bounds)
    m, jac = _model(x, dt_fs, n, params, profile)
    if not (np.all(np.isfinite(params)) and np.all(m > 0)):
        raise RuntimeError(f"{profile} fit failed")
    free = (params > bounds[:, 0]) & (params < bounds[:, 1])
    try:
        cov = np.linalg.inv(n_averaged * (jac / m) @ (jac / m).T)
    except np.linalg.LinAlgError as err:
        raise RuntimeError("singular Fisher information") from err
    errors = np.sqrt(np.clip(np.diag(cov), 0, None))
    bias = _bias(x, dt_fs, n, n_averaged, params, profile, m, jac, cov, free)
    if np.all(np.abs(bias[:2]) <= errors[:2]):  # else outside the expansion's validity
        params = np.maximum(params - bias, bounds[:, 0])  # a corrected width stays > 0
    return params, errors


def renormalise(velocities: np.ndarray, modes: Modes, dt_fs: float, n_segments: int = 1,
                min_frequency: float = 0.05, window_thz: float | None = None,
                profile: str = "damped_oscillator") -> Renormalised:
    """Renormalised frequencies and linewidths of every mode from an MD run.

    ``velocities``: [n_frames, n, 3] A/fs at spacing ``dt_fs`` (equilibrated frames).
    ``n_segments``: periodograms of this many segments averaged (1, the default: the
    whole run, resolution 1/duration). Modes with |harmonic frequency| < ``min_frequency``
    THz (the translations) are not fitted. ``window_thz``: search the peak within this
    distance of the harmonic frequency (None: anywhere, which suits strongly anharmonic
    and imaginary harmonic modes). ``profile``: the line shape fitted (PROFILES).
    """
    q_dot = project_velocities(velocities, modes)
    f, spectra = periodograms(q_dot, dt_fs, n_segments=n_segments)
    n = q_dot.shape[-1] // max(int(n_segments), 1)
    m = modes.n_modes
    out = {k: np.full(m, np.nan) for k in ("freq", "dfreq", "width", "dwidth")}
    fitted = np.zeros(m, dtype=bool)
    for nu in range(m):
        harmonic = modes.frequencies[nu]
        if abs(harmonic) < min_frequency:
            continue
        try:
            params, errors = fit_peak(f, spectra[nu], dt_fs, n, guess=abs(harmonic),
                                      window_thz=window_thz, n_averaged=max(int(n_segments), 1),
                                      profile=profile)
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
    for a, b in itertools.pairwise(order):
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
