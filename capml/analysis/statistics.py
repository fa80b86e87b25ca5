"""Means of correlated time series (MD observables) with honest error bars, and the
error metrics of predictions against references.

The standard error of the mean of N correlated samples is
sigma * sqrt(2 tau_int / N), with tau_int the integrated autocorrelation time
(in samples; 1/2 for uncorrelated data). tau_int is estimated with Sokal's
automatic window (the smallest W with W >= c tau_int(W)), the estimator used by
emcee and by lattice-QCD codes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MeanEstimate:
    mean: float
    sem: float  # standard error of the mean, accounting for autocorrelation
    std: float  # sample standard deviation
    tau_int: float  # integrated autocorrelation time, in samples (0.5: uncorrelated)
    n_samples: int

    @property
    def n_effective(self) -> float:
        return self.n_samples / (2.0 * self.tau_int)


def autocorrelation(x: np.ndarray) -> np.ndarray:
    """Normalised autocorrelation function rho(k), k = 0..N-1 (FFT, zero-padded)."""
    x = np.asarray(x, dtype=float)
    n = len(x)
    y = x - x.mean()
    size = 1 << (2 * n - 1).bit_length()
    f = np.fft.rfft(y, size)
    acf = np.fft.irfft(f * np.conjugate(f), size)[:n]
    return acf / acf[0] if acf[0] > 0 else np.zeros(n)


def integrated_autocorrelation_time(x: np.ndarray, c: float = 5.0) -> float:
    """tau_int = 1/2 + sum_{k=1}^{W} rho(k) with Sokal's window W (samples)."""
    rho = autocorrelation(x)
    if not rho[0] > 0:  # constant series
        return 0.5
    taus = np.cumsum(rho) - 0.5  # tau(W) for W = 0, 1, ...
    window = np.arange(len(taus)) >= c * taus
    w = int(np.argmax(window)) if window.any() else len(taus) - 1
    return float(max(taus[w], 0.5))


def mean_with_error(x: np.ndarray, c: float = 5.0) -> MeanEstimate:
    """Mean of a time series with its autocorrelation-aware standard error."""
    x = np.asarray(x, dtype=float)
    if x.ndim != 1 or len(x) < 2:
        raise ValueError(f"expected a 1-d series of at least 2 samples, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("series contains NaN or infinite values")
    tau = integrated_autocorrelation_time(x, c)
    std = float(x.std(ddof=1))
    return MeanEstimate(float(x.mean()), std * np.sqrt(2.0 * tau / len(x)), std, tau, len(x))


def error_metrics(reference, predicted) -> dict[str, float]:
    """MAE, RMSE, largest absolute error (units of the inputs) and R^2 of ``predicted``
    (NaN when the reference has no spread, e.g. a single energy)."""
    ref = np.asarray(reference, dtype=float).reshape(-1)
    pred = np.asarray(predicted, dtype=float).reshape(-1)
    if ref.shape != pred.shape or ref.size == 0:
        raise ValueError(f"parity arrays differ in size or are empty ({ref.size} vs {pred.size})")
    err = pred - ref
    ss_tot = float(np.sum((ref - ref.mean()) ** 2))
    return {"mae": float(np.mean(np.abs(err))), "rmse": float(np.sqrt(np.mean(err ** 2))),
            "max": float(np.max(np.abs(err))),
            "r2": float(1.0 - np.sum(err ** 2) / ss_tot) if ss_tot > 0 else float("nan")}
