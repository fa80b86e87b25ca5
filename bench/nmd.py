"""Normal-mode decomposition: capml (analysis.nmd) vs DynaPhoPy 1.19, accuracy and speed on
the same trajectories with a known answer.

    python bench/nmd.py                           # 40-atom Ag3SBr, 20, 50 and 100 ps x 5 fs
    python bench/nmd.py --lengths 50 --repeats 1 --seed 3

The MD cell is the 2x2x2 Ag3SBr supercell (40 atoms) of the demo's GFN2-xTB force
constants (data/demo/force_constants/gfn2-xtb_x1.yaml, the x = 1 end member of
configs/system/ag3sbri.yaml). Its harmonic Gamma modes (those of Gamma, X, M, R of the
5-atom cell) include imaginary ones, so the seeded synthetic trajectory gives every mode a
stabilised frequency f = sqrt(f_h |f_h| + (2.5 THz)^2) (a self-consistent-phonon-like
shift) and a FWHM of 0.05 + 0.04 f THz, and samples each as an exact Langevin (damped
harmonic) oscillator at 300 K, equal within each degenerate group as Pm-3m requires.

Per trajectory length, the same velocities go to capml's renormalise (periodogram of the
whole run, maximum Whittle likelihood on the exact expected periodogram) with its default
damped-oscillator profile and with the Lorentzian, and to DynaPhoPy's Quasiparticle (per-q
projections, FFT power spectra averaged over degenerate modes and equivalent q-points,
least-squares Lorentzian fits at its default 0.05 THz resolution). Timed: each analysis of
the in-memory trajectory, wall and CPU seconds (medians of ``--repeats``; a speed-up is
DynaPhoPy's time over the row's). Accuracy, per mode with degenerate groups averaged and acoustic modes left out:
mean and max |f - f_true| and |G - G_true| (THz, G = FWHM), the G ratio mean(G) /
mean(G_true), and for capml the fraction of (single, not group-averaged) modes within two
of their reported standard errors of the truth (95 % if the errors are right).

DynaPhoPy conventions: time in ps, velocities in A/ps, frequencies in THz, ``width`` =
FWHM; its biased ('same'-mode) autocorrelation over pieces of T = 1/resolution widens a
Lorentzian by 1/(pi T) (0.016 THz here), included in its G ratio. At Gamma it zeroes the
three lowest modes, taken to be the acoustic ones; with imaginary optical modes at Gamma
(here -2.15 THz) they are not, so Gamma is refitted with DynaPhoPy's own fit and only the
true acoustic modes are dropped (tests/helpers/dynaphopy_link.py).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the synthetic trajectory and DynaPhoPy driver

from helpers.dynaphopy_link import dynaphopy_renormalise, on_modes
from helpers.synthetic import cartesian_velocities, langevin_mode_velocities

from capml.analysis import nmd
from capml.simulation.phonopy_io import load_phonopy

FORCE_CONSTANTS = ROOT / "data" / "demo" / "force_constants" / "gfn2-xtb_x1.yaml"


def timed(fn, repeats):
    """Median (wall, CPU) seconds of ``repeats`` calls, and the last result."""
    wall, cpu, result = [], [], None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return (statistics.median(wall), statistics.median(cpu)), result


def accuracy(h, f, w, f_true, w_true, use, f_err=None):
    """(mean |df|, max |df|, mean |dG|, max |dG|, G ratio, fraction within 2 sigma) over the
    modes ``use``, degenerate groups averaged (the coverage is per single mode)."""
    fa, wa = nmd.average_degenerate(f, h), nmd.average_degenerate(w, h)
    df, dw = np.abs(fa - f_true)[use], np.abs(wa - w_true)[use]
    cover = np.nan if f_err is None else np.mean(np.abs(f - f_true)[use] < 2 * f_err[use])
    return (df.mean(), df.max(), dw.mean(), dw.max(), wa[use].mean() / w_true[use].mean(),
            cover)


def one_length(phonon, modes, f_true, w_true, n_frames, args, seed):
    """Rows (name, wall s, accuracy) of the three analyses of one seeded trajectory."""
    h = modes.frequencies
    moving = np.abs(h) > 0.05
    q_dot = langevin_mode_velocities(f_true[moving], w_true[moving], n_frames, args.dt,
                                     args.temperature, np.random.default_rng(seed))
    v = cartesian_velocities(modes, q_dot, moving)
    t_dyn, (harmonic, freq, width) = timed(
        lambda: dynaphopy_renormalise(phonon, v, args.dt, resolution=args.resolution),
        args.repeats)
    their_f, _ = on_modes(modes, harmonic, freq)
    their_w, _ = on_modes(modes, harmonic, width)
    ours = {}
    for profile in nmd.PROFILES:
        ours[profile] = timed(lambda p=profile: nmd.renormalise(v, modes, args.dt, profile=p),
                              args.repeats)
    use = moving & np.isfinite(their_f) & np.all([r.fitted for _, r in ours.values()], axis=0)
    rows = [(f"DynaPhoPy {args.resolution:g} THz", t_dyn,
             accuracy(h, their_f, their_w, f_true, w_true, use))]
    for profile, (t, r) in ours.items():
        rows.append((f"capml {profile}", t, accuracy(h, r.frequencies, r.linewidths, f_true,
                                                     w_true, use, r.frequency_errors)))
    return rows, int(use.sum()), sum(1 for g in nmd.degenerate_groups(h) if use[g].all())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", type=float, nargs="+", default=[20.0, 50.0, 100.0],
                   help="trajectory lengths (ps)")
    p.add_argument("--dt", type=float, default=5.0, help="frame spacing (fs)")
    p.add_argument("--temperature", type=float, default=300.0)
    p.add_argument("--shift", type=float, default=2.5,
                   help="stabilising shift (THz): f^2 = f_h |f_h| + shift^2")
    p.add_argument("--resolution", type=float, default=0.05,
                   help="DynaPhoPy's spectrum resolution (THz)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    warnings.simplefilter("ignore")

    phonon = load_phonopy(FORCE_CONSTANTS)
    modes = nmd.modes_from_phonopy(phonon)
    h = modes.frequencies
    f_true = np.sqrt(np.clip(h * np.abs(h) + args.shift**2, 0.0, None))
    w_true = 0.05 + 0.04 * f_true
    print(f"{len(phonon.supercell)}-atom Ag3SBr (gfn2-xtb_x1), {modes.n_modes} modes "
          f"({(h < -0.05).sum()} imaginary harmonic); synthetic Langevin modes at "
          f"{args.temperature:g} K, FWHM {w_true[np.abs(h) > 0.05].min():.2f}-"
          f"{w_true.max():.2f} THz, frames every {args.dt:g} fs; median of {args.repeats}")
    print("accuracy against the truth (THz; G = FWHM; degenerate groups averaged); "
          "speed-up = DynaPhoPy time / time")
    print(f"{'':>28} {'wall s':>7} {'speed-up':>8} {'CPU s':>7} {'speed-up':>8} "
          f"{'|df| mean':>9} {'max':>6} "
          f"{'|dG| mean':>9} {'max':>6} {'G ratio':>7} {'f within 2 sigma':>16}")
    for k, length in enumerate(args.lengths):
        n_frames = round(length * 1e3 / args.dt)
        rows, n_used, n_groups = one_length(phonon, modes, f_true, w_true, n_frames, args,
                                            args.seed + k)
        print(f"{length:g} ps ({n_frames} frames, seed {args.seed + k}): {n_used} modes in "
              f"{n_groups} degenerate groups")
        (w_dyn, c_dyn) = rows[0][1]
        for name, (w, c), (dfm, dfx, dwm, dwx, ratio, cover) in rows:
            cover_s = "" if np.isnan(cover) else f"{100 * cover:.0f} %"
            print(f"{name:>28} {w:7.3f} {w_dyn / w:8.1f} {c:7.3f} {c_dyn / c:8.1f} {dfm:9.4f} "
                  f"{dfx:6.3f} {dwm:9.4f} {dwx:6.3f} {ratio:7.3f} {cover_s:>16}")


if __name__ == "__main__":
    main()
