"""``analyze.py task=renormalised_phonons``: anharmonic phonons from MD (paper Eqs. 2-4).

For every trajectory in ``task.md_dir`` the velocities after the equilibration
window are projected onto the harmonic Gamma modes of the trajectory's
structure (force constants from ``task.phonons_dir/<source>/phonopy.yaml``),
one peak is fitted per mode, and the renormalised frequencies rebuild force
constants: ``<name>/phonopy_renormalised.yaml`` (phonopy's format), its band
structure (ordered cells) or Gamma frequencies + DOS (``band_dos.png``), the
mode table ``<name>/modes.csv`` and ``<name>/spectra.png``. ``stabilisation.csv``
summarises: harmonic imaginary modes, renormalised ones, the verdict. With
``task.max_uncertainty`` (eV/A) a run is analysed only up to its first frame whose committee
force spread exceeds it (``task.beyond_uncertainty=flag``: all frames, counted).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from capml.analysis import nmd
from capml.analysis.stabilisation import plot_spectra, verdict
from capml.simulation import phonons
from capml.simulation.phonopy_io import load_phonopy, map_atoms, save_phonopy, supercell_atoms
from capml.simulation.trajectory import (
    equilibrated,
    force_constants_file,
    largest_spread,
    read_trajectories,
    within_uncertainty,
)
from capml.utils.config import plain

log = logging.getLogger(__name__)


def analyse_trajectory(traj, phonon, t) -> tuple[dict, pd.DataFrame, nmd.Renormalised, object]:
    """(summary row, mode table, fit result, renormalised phonopy) of one trajectory."""
    ref = supercell_atoms(phonon)
    start = traj.atoms(0)
    if len(ref) != len(start) or not np.allclose(ref.cell.array, start.cell.array, atol=1e-4):
        raise ValueError(f"{traj.path}: MD cell ({len(start)} atoms) is not the phonopy "
                         f"supercell ({len(ref)} atoms) of its force constants")
    order = map_atoms(ref, start, tol=0.05)  # start[i] sits on ref[order[i]]
    if (ref.numbers[order] != start.numbers).any():
        raise ValueError(f"{traj.path}: species differ from the force constants' structure")
    keep = equilibrated(traj.times_fs, t.equilibration_ps, where=str(traj.path))
    velocities = np.empty_like(traj.velocities[keep])
    velocities[:, order] = traj.velocities[keep]  # into phonopy's atom order
    modes = nmd.modes_from_phonopy(phonon)
    fit = nmd.renormalise(velocities, modes, dt_fs=traj.spacing_fs,
                          n_segments=int(t.n_segments),
                          min_frequency=float(t.min_frequency),
                          window_thz=None if t.window_thz is None else float(t.window_thz),
                          profile=str(t.profile))
    freqs = nmd.average_degenerate(fit.frequencies, modes.frequencies, float(t.degeneracy_thz))
    renorm = phonon.copy()
    renorm.force_constants = nmd.renormalised_force_constants(modes, freqs)
    table = pd.DataFrame({"mode": np.arange(modes.n_modes), "harmonic_thz": modes.frequencies,
                          "renormalised_thz": fit.frequencies,
                          "renormalised_sym_thz": freqs,
                          "frequency_error_thz": fit.frequency_errors,
                          "linewidth_thz": fit.linewidths,
                          "linewidth_error_thz": fit.linewidth_errors, "fitted": fit.fitted})
    tol = float(t.tolerance)
    moving = np.abs(modes.frequencies) >= float(t.min_frequency)
    imag_h = moving & (modes.frequencies < -tol)
    imag_r = imag_h & ~(fit.fitted & (freqs > tol))
    row = {"name": traj.name, "source": traj.source, "x": traj.x,
           "temperature": traj.temperature, "md_status": traj.status,
           "frames_used": len(keep), "duration_ps": (traj.times_fs[keep][-1] -
                                                     traj.times_fs[keep][0]) / 1e3,
           "n_modes_fitted": int(fit.fitted.sum()), "n_imaginary_harmonic": int(imag_h.sum()),
           "n_imaginary_renormalised": int(imag_r.sum()),
           "min_harmonic_thz": float(modes.frequencies[moving].min()),
           "min_renormalised_thz": float(np.nanmin(freqs[moving])),
           "mean_shift_thz": float(np.nanmean(np.abs(freqs[moving]) -
                                              np.abs(modes.frequencies[moving]))),
           "median_linewidth_thz": float(np.nanmedian(fit.linewidths[moving])),
           "resolution_thz": float(fit.spectrum_frequencies[1] - fit.spectrum_frequencies[0]),
           "average_displacement_a": nmd.average_displacement(traj.positions[keep],
                                                              start.positions, traj.masses),
           "max_average_displacement_a": float(t.max_average_displacement)}
    if row["resolution_thz"] > float(t.max_resolution_thz):
        log.warning("%s: spectral resolution %.2f THz (%.1f ps per periodogram segment): peak "
                    "centres and linewidths are uncertain at that level; run longer MD "
                    "(the paper: 50 ps)", traj.name, row["resolution_thz"],
                    1.0 / row["resolution_thz"])
    row["verdict"] = verdict(row)
    if row["verdict"].startswith("left"):
        log.warning("%s: %s", traj.name, row["verdict"])
    return row, table, fit, renorm


def run(cfg: DictConfig) -> Path:
    t = cfg.task
    out = Path(t.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for traj in read_trajectories(t.md_dir, bool(t.include_blown_up)):
        t0 = time.perf_counter()
        traj, n_beyond = within_uncertainty(traj, t.get("max_uncertainty"),
                                            str(t.get("beyond_uncertainty", "refuse")))
        phonon = load_phonopy(force_constants_file(t.phonons_dir, traj.source))
        row, table, fit, renorm = analyse_trajectory(traj, phonon, t)
        sub = out / traj.name
        sub.mkdir(parents=True, exist_ok=True)
        table.to_csv(sub / "modes.csv", index=False)
        save_phonopy(renorm, sub / "phonopy_renormalised.yaml")
        result = phonons.analyse(renorm, mesh=plain(t.mesh), npoints=int(t.npoints),
                                 tolerance=float(t.tolerance))
        phonons.plot(result, sub / "band_dos.png",
                     title=f"{traj.name}: renormalised at {traj.temperature:g} K")
        plot_spectra(fit, sub / "spectra.png", traj.name)
        row.update(n_beyond_uncertainty=n_beyond, max_force_spread=largest_spread(traj))
        row["seconds"] = round(time.perf_counter() - t0, 2)
        row["renormalised_dispersion"] = result["stability"].summary()
        rows.append(row)
        log.info("%s: %d/%d modes fitted in %.1f s; %s", traj.name, row["n_modes_fitted"],
                 len(table), row["seconds"], row["verdict"])
    summary = pd.DataFrame(rows)
    summary.to_csv(out / "stabilisation.csv", index=False)
    log.info("renormalised phonons:\n%s", summary[["name", "frames_used", "n_imaginary_harmonic",
                                                   "n_imaginary_renormalised", "mean_shift_thz",
                                                   "median_linewidth_thz"]].to_string(index=False))
    return out / "stabilisation.csv"
