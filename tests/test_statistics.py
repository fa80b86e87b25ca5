"""Error bars of correlated series: AR(1) gives its known standard error; Delta Eg of a
constant-gap model is zero with error bars that cover zero."""

import numpy as np
import pytest

from capml.analysis import thermal_gap
from capml.analysis.statistics import integrated_autocorrelation_time, mean_with_error


def ar1(phi, n, rng):
    noise = rng.normal(size=n)
    x = np.empty(n)
    x[0] = noise[0] / np.sqrt(1 - phi**2)  # stationary start
    for t in range(1, n):
        x[t] = phi * x[t - 1] + noise[t]
    return x


@pytest.mark.parametrize("phi", [0.0, 0.5, 0.9])
def test_ar1_standard_error_matches_theory(phi):
    """AR(1) with unit noise: var = 1/(1-phi^2), tau_int = (1+phi)/(2(1-phi)),
    SEM^2 = var (1+phi) / ((1-phi) N)."""
    rng = np.random.default_rng(7)
    n, reps = 20000, 40
    true_tau = (1 + phi) / (2 * (1 - phi))
    true_sem = np.sqrt(1 / (1 - phi**2) * (1 + phi) / (1 - phi) / n)
    estimates = [mean_with_error(ar1(phi, n, rng)) for _ in range(reps)]
    taus = np.array([e.tau_int for e in estimates])
    sems = np.array([e.sem for e in estimates])
    means = np.array([e.mean for e in estimates])
    assert abs(np.median(taus) - true_tau) < 0.1 * true_tau + 0.05
    assert abs(np.median(sems) - true_sem) < 0.1 * true_sem
    # the error bars are honest: the spread of the means over replicas equals the SEM
    assert abs(means.std(ddof=1) - true_sem) < 0.3 * true_sem


def test_constant_series_and_bad_input():
    assert integrated_autocorrelation_time(np.ones(100)) == 0.5
    with pytest.raises(ValueError, match="NaN"):
        mean_with_error(np.array([1.0, np.nan, 2.0]))
    with pytest.raises(ValueError, match="at least 2"):
        mean_with_error(np.array([1.0]))


def test_constant_gap_model_gives_zero_renormalisation():
    rng = np.random.default_rng(3)
    times = np.arange(0, 20000, 5.0)  # fs
    noise = 1e-3 * ar1(0.8, len(times), rng)  # a constant gap seen through a noisy model
    res = thermal_gap.md_renormalisation(2.5 + noise, times, gap_0K=2.5, equilibration_ps=2.0)
    assert res["n_frames"] == int((times >= 2000).sum())
    assert abs(res["delta_gap"]) <= 3 * res["delta_gap_sem"]
    assert res["delta_gap_sem"] > 0
    exact = thermal_gap.md_renormalisation(np.full(len(times), 2.5), times, 2.5, 2.0)
    assert exact["delta_gap"] == 0 and exact["delta_gap_sem"] == 0


def test_equilibration_longer_than_run_is_a_clear_error():
    with pytest.raises(ValueError, match="frames after task.equilibration_ps"):
        thermal_gap.md_renormalisation(np.ones(10), np.arange(10) * 5.0, 1.0, 1.0)
