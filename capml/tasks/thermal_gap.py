"""``analyze.py task=thermal_gap``: temperature-renormalised band gaps (paper Eq. 6).

For every MD trajectory in ``task.md_dir``: the GNN gap (``task.checkpoint``) of
every ``task.every``-th frame after ``task.equilibration_ps``, the 0 K gap of the
relaxed structure the run started from (its first frame), Delta Eg(T) and an
autocorrelation-aware standard error. With ``task.max_uncertainty`` (eV/A) frames whose
committee force spread exceeds it are refused (the run is analysed up to the first of them)
or, ``task.beyond_uncertainty=flag``, counted in ``n_beyond_uncertainty``. With ``task.quantum.n_samples > 0`` also
the harmonic quantum estimate: the mean gap over phonopy thermal-displacement
samples of the same relaxed structure at T (zero-point motion included), from
its force constants in ``task.phonons_dir``.

Outputs: ``thermal_gap.csv`` (one row per structure, T and method),
``table_I.csv``/``table_I.md`` (the paper's Table I layout), ``thermal_gap.png``
(Fig. 7b-d) and ``<name>_gap_series.csv`` (time, gap) per trajectory.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from capml.analysis import thermal_gap
from capml.predict import load_predictor
from capml.sampling.displacements import thermal
from capml.simulation.phonopy_io import full_force_constants, load_phonopy, supercell_atoms
from capml.simulation.trajectory import (
    equilibrated,
    force_constants_file,
    largest_spread,
    read_trajectories,
    within_uncertainty,
)
from capml.utils.seeds import seed_of
from capml.utils.tables import markdown

log = logging.getLogger(__name__)


def quantum_row(traj, phonon, predictor, t, seed: int) -> dict:
    """Harmonic thermal-displacement estimate for the trajectory's structure and T."""
    atoms = supercell_atoms(phonon)
    samples = thermal(atoms, full_force_constants(phonon), traj.temperature, seed=seed,
                      n_samples=int(t.quantum.n_samples),
                      cutoff_frequency=t.quantum.cutoff_frequency)
    gaps = predictor.predict([atoms] + samples)
    row = thermal_gap.sample_renormalisation(gaps[1:], gaps[0])
    return {"name": traj.name, "source": traj.source, "x": traj.x,
            "temperature": traj.temperature, "method": "thermal_displacements", **row}


def run(cfg: DictConfig) -> Path:
    t = cfg.task
    out = Path(t.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    predictor = load_predictor(t.checkpoint)
    rows = []
    for traj in read_trajectories(t.md_dir, bool(t.include_blown_up)):
        traj, n_beyond = within_uncertainty(traj, t.get("max_uncertainty"),
                                            str(t.get("beyond_uncertainty", "refuse")))
        keep = equilibrated(traj.times_fs, t.equilibration_ps, where=str(traj.path))
        frames = np.r_[0, keep[:: int(t.every)]]
        gaps = predictor.predict([traj.atoms(k) for k in frames])
        pd.DataFrame({"time_fs": traj.times_fs[frames], "band_gap": gaps}).to_csv(
            out / f"{traj.name}_gap_series.csv", index=False)
        row = thermal_gap.md_renormalisation(gaps[1:], traj.times_fs[frames[1:]], gaps[0],
                                             equilibration_ps=float(t.equilibration_ps))
        rows.append({"name": traj.name, "source": traj.source, "x": traj.x,
                     "temperature": traj.temperature, "method": "md",
                     "md_status": traj.status, "n_beyond_uncertainty": n_beyond,
                     "max_force_spread": largest_spread(traj), **row})
        log.info("%s: Eg(0 K) %.3f eV, <Eg> %.3f +- %.3f eV over %d frames (tau_int %.0f fs): "
                 "Delta Eg %+.3f eV", traj.name, row["gap_0K"], row["gap_mean"], row["gap_sem"],
                 row["n_frames"], row["tau_int_fs"], row["delta_gap"])
        if int(t.quantum.n_samples) > 0:
            phonon = load_phonopy(force_constants_file(t.phonons_dir, traj.source))
            seed = seed_of(cfg.seed, traj.name)
            q = quantum_row(traj, phonon, predictor, t, seed)
            rows.append(q)
            log.info("%s: harmonic thermal displacements: <Eg> %.3f +- %.3f eV, Delta Eg "
                     "%+.3f eV (%d samples)", traj.name, q["gap_mean"], q["gap_sem"],
                     q["delta_gap"], q["n_frames"])
    results = pd.DataFrame(rows).sort_values(["method", "x", "temperature"])
    results.to_csv(out / "thermal_gap.csv", index=False)
    table = thermal_gap.table_one(results)
    table.to_csv(out / "table_I.csv", index=False)
    (out / "table_I.md").write_text(markdown(table))
    thermal_gap.plot(results, out / "thermal_gap.png")
    log.info("band gaps (eV), Table I layout (MD):\n%s", table.to_string(index=False))
    return out / "thermal_gap.csv"
