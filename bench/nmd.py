"""Normal-mode decomposition: capml (analysis.nmd) vs DynaPhoPy 1.19 on one trajectory.

    python bench/nmd.py                        # 40-atom Ag3SBr, 10,000 frames x 5 fs = 50 ps
    python bench/nmd.py --frames 40000 --profile damped_oscillator --repeats 1

The MD cell is the 2x2x2 Ag3SBr supercell (40 atoms) of the demo's GFN2-xTB force
constants (data/demo/force_constants/gfn2-xtb_x1.yaml, the x = 1 end member of
configs/system/ag3sbri.yaml). Its harmonic Gamma modes (those of Gamma, X, M, R of the
5-atom cell) include imaginary ones, so the seeded synthetic trajectory gives every mode a
stabilised frequency f = sqrt(f_h |f_h| + (2.5 THz)^2) (a self-consistent-phonon-like
shift) and a FWHM of 0.05 + 0.04 f THz, and samples each as an exact Langevin (damped
harmonic) oscillator at 300 K, equal within each degenerate group as Pm-3m requires.

Both codes get the same velocities: capml's renormalise (Welch spectra of the Gamma-mode
projections, Whittle-likelihood fits; ``--profile``, Lorentzian by default as DynaPhoPy
fits Lorentzians) and DynaPhoPy's Quasiparticle (per-q projections, FFT power spectra
averaged over degenerate modes and equivalent q-points, least-squares Lorentzian fits,
its default 0.05 THz resolution). Timed: each code's whole analysis of the in-memory
trajectory (median of ``--repeats``). Reported: the times and their ratio, and per mode
(degenerate groups averaged, acoustic modes left out) the agreement of renormalised
frequencies and FWHM linewidths between the codes and with the truth.

DynaPhoPy conventions: time in ps, velocities in A/ps, frequencies in THz, ``width`` =
FWHM; its biased ('same'-mode) autocorrelation over pieces of T = 1/resolution widens a
Lorentzian by 1/(pi T). At Gamma it zeroes the three lowest modes, taken to be the
acoustic ones; with imaginary optical modes at Gamma (here -2.15 THz) they are not, so
Gamma is refitted with DynaPhoPy's own fit and only the true acoustic modes are dropped.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from pathlib import Path

import numpy as np

from capml.analysis import nmd
from capml.analysis.dynaphopy_link import dynaphopy_renormalise, on_modes
from capml.analysis.synthetic import cartesian_velocities, langevin_mode_velocities
from capml.simulation.phonopy_io import load_phonopy

ROOT = Path(__file__).resolve().parents[1]
FORCE_CONSTANTS = ROOT / "data" / "demo" / "force_constants" / "gfn2-xtb_x1.yaml"


def timed(fn, repeats):
    """Median wall and CPU seconds of ``repeats`` calls, and the last result."""
    wall, cpu, result = [], [], None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu), result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=10000)
    p.add_argument("--dt", type=float, default=5.0, help="frame spacing (fs)")
    p.add_argument("--temperature", type=float, default=300.0)
    p.add_argument("--shift", type=float, default=2.5,
                   help="stabilising shift (THz): f^2 = f_h |f_h| + shift^2")
    p.add_argument("--segments", type=int, default=1, help="capml's Welch segments")
    p.add_argument("--profile", default="lorentzian", choices=sorted(nmd.PROFILES),
                   help="capml's fitted peak profile")
    p.add_argument("--resolution", type=float, default=0.05,
                   help="DynaPhoPy's spectrum resolution (THz)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    warnings.simplefilter("ignore")

    phonon = load_phonopy(FORCE_CONSTANTS)
    modes = nmd.modes_from_phonopy(phonon)
    h = modes.frequencies
    moving = np.abs(h) > 0.05
    f_true = np.sqrt(np.clip(h * np.abs(h) + args.shift**2, 0.0, None))
    w_true = 0.05 + 0.04 * f_true
    q_dot = langevin_mode_velocities(f_true[moving], w_true[moving], args.frames, args.dt,
                                     args.temperature, np.random.default_rng(args.seed))
    v = cartesian_velocities(modes, q_dot, moving)

    t_cap, c_cap, ours = timed(lambda: nmd.renormalise(v, modes, args.dt, n_segments=args.segments,
                                                profile=args.profile), args.repeats)
    t_dyn, c_dyn, (harmonic, freq, width) = timed(
        lambda: dynaphopy_renormalise(phonon, v, args.dt, resolution=args.resolution),
        args.repeats)

    their_f, dh = on_modes(modes, harmonic, freq)
    their_w, _ = on_modes(modes, harmonic, width)
    ours_f, ours_w = nmd.average_degenerate(ours.frequencies, h), \
        nmd.average_degenerate(ours.linewidths, h)
    both = moving & np.isfinite(their_f) & ours.fitted
    n_groups = sum(1 for g in nmd.degenerate_groups(h) if both[g].all())
    taper = args.resolution / np.pi

    duration = args.frames * args.dt * 1e-3
    print(f"{len(phonon.supercell)}-atom Ag3SBr (gfn2-xtb_x1), {modes.n_modes} modes "
          f"({(h < -0.05).sum()} imaginary harmonic); synthetic Langevin modes at "
          f"{args.temperature:g} K: {args.frames} frames x {args.dt:g} fs = {duration:g} ps, "
          f"seed {args.seed}; median of {args.repeats}")
    print(f"capml: Welch {args.segments} segment(s), {args.profile} Whittle fits | "
          f"DynaPhoPy: FFT (numpy), {args.resolution:g} THz resolution, Lorentzian "
          f"least squares")
    print(f"{'code':>16} {'wall s':>8} {'ratio':>7} {'CPU s':>8} {'ratio':>7}")
    for name, t, c in (("DynaPhoPy 1.19", t_dyn, c_dyn), ("capml", t_cap, c_cap)):
        print(f"{name:>16} {t:8.3f} {t_dyn / t:7.1f} {c:8.3f} {c_dyn / c:7.1f}")
    print(f"agreement over {both.sum()} modes in {n_groups} degenerate groups (acoustic "
          f"left out; harmonic frequencies of the two codes agree to {dh:.1e} THz):")
    print(f"{'':>20} {'|df| max':>9} {'mean':>7} {'|dG| max':>9} {'mean':>7} "
          f"{'G ratio':>8}  (THz; G = FWHM)")
    rows = (("capml - DynaPhoPy", ours_f, their_f, ours_w, their_w),
            ("capml - truth", ours_f, f_true, ours_w, w_true),
            ("DynaPhoPy - truth", their_f, f_true, their_w, w_true))
    for name, fa, fb, wa, wb in rows:
        df, dw = np.abs(fa - fb)[both], np.abs(wa - wb)[both]
        ratio = np.mean(wa[both]) / np.mean(wb[both])
        print(f"{name:>20} {df.max():9.3f} {df.mean():7.3f} {dw.max():9.3f} {dw.mean():7.3f} "
              f"{ratio:8.3f}")
    print(f"(DynaPhoPy's widths include its autocorrelation taper, 1/(pi T) = {taper:.3f} "
          f"THz; mean G ratio capml / (DynaPhoPy - taper): "
          f"{np.mean(ours_w[both]) / (np.mean(their_w[both]) - taper):.3f})")


if __name__ == "__main__":
    main()
