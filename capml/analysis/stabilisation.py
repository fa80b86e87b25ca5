"""Verdict and figure of a renormalised-phonon analysis (capml.analysis.nmd) of one MD run."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from capml.analysis import nmd


def verdict(row: dict) -> str:
    """Stability verdict of one MD run from its summary row: it left its reference
    structure (time-averaged displacement above the limit), was harmonically stable, was
    dynamically stabilised (every imaginary harmonic Gamma mode renormalised to a real
    frequency), or stays unstable."""
    h, r = row["n_imaginary_harmonic"], row["n_imaginary_renormalised"]
    if row["average_displacement_a"] > row["max_average_displacement_a"]:
        return (f"left the reference structure: time-averaged displacement "
                f"{row['average_displacement_a']:.2f} A (RMS) > "
                f"{row['max_average_displacement_a']:g} A, so its harmonic modes do not "
                "describe the motion and the frequencies are not renormalised phonons of it")
    if h == 0:
        return "harmonically stable"
    if r == 0:
        return f"dynamically stabilised: all {h} imaginary harmonic Gamma modes are real at " \
               f"{row['temperature']:g} K"
    return f"unstable: {r} of {h} imaginary harmonic Gamma modes stay imaginary or unfitted"


def plot_spectra(fit: nmd.Renormalised, path: Path, title: str, n_show: int = 12) -> Path:
    """Mode power spectra (up to ``n_show`` fitted modes, offset) with the fitted centres,
    and renormalised frequencies and linewidths against the harmonic ones (THz)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    shown = np.where(fit.fitted)[0]
    shown = shown[np.linspace(0, len(shown) - 1, min(n_show, len(shown))).astype(int)] \
        if len(shown) else shown
    fmax = np.nanmax(np.abs(fit.harmonic)) * 1.3
    for k, nu in enumerate(shown):
        p = fit.spectra[nu] / fit.spectra[nu].max()
        ax.plot(fit.spectrum_frequencies, p + k, lw=0.7, color=f"C{k % 10}")
        ax.plot([fit.frequencies[nu]] * 2, [k, k + 1], color=f"C{k % 10}", lw=0.8, ls=":")
    ax.set(xlim=(0, fmax), xlabel="frequency (THz)", ylabel="mode power spectrum (offset)",
           title=title)
    ok = fit.fitted
    bx.errorbar(fit.harmonic[ok], fit.frequencies[ok], yerr=fit.frequency_errors[ok], fmt="o",
                ms=3, label="renormalised")
    bx.errorbar(fit.harmonic[ok], fit.linewidths[ok], yerr=fit.linewidth_errors[ok], fmt="s",
                ms=3, label="linewidth (FWHM)")
    lim = [min(0, np.nanmin(fit.harmonic)), fmax]
    bx.plot(lim, lim, "k--", lw=0.6)
    bx.set(xlabel="harmonic frequency (THz)", ylabel="THz")
    bx.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path
