"""Reading the outputs of ``simulate.py`` runs for analysis.

A simulation directory (e.g. of ``simulate.py experiment=demo``) holds
``phonons/<structure id>/phonopy.yaml`` and ``md/<structure id>_T<T>K.h5``; a
trajectory's ``source`` metadata is the structure id, which links it to its
harmonic force constants.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms

from capml.data import DataError, store
from capml.simulation.trajectory import BLOWN_UP

log = logging.getLogger(__name__)


@dataclass
class Trajectory:
    path: Path
    name: str  # replica name, e.g. x0.5000-rank0_T300K
    source: str  # structure id of the starting structure
    x: float
    temperature: float  # K, thermostat target
    status: str  # running | finished | blown up: ...
    times_fs: np.ndarray  # [frames]
    positions: np.ndarray  # [frames, n, 3] A (unwrapped)
    velocities: np.ndarray  # [frames, n, 3] A/fs
    numbers: np.ndarray  # [n]
    cell: np.ndarray  # [3, 3] A
    masses: np.ndarray  # [n] amu, the ones the MD used

    def atoms(self, frame: int) -> Atoms:
        a = Atoms(numbers=self.numbers, positions=self.positions[frame], cell=self.cell, pbc=True)
        a.set_masses(self.masses)
        return a

    @property
    def spacing_fs(self) -> float:
        return float(np.median(np.diff(self.times_fs)))


def trajectory_files(md_dir) -> list[Path]:
    md_dir = Path(md_dir)
    files = sorted(md_dir.glob("*.h5"))
    if not files:
        raise FileNotFoundError(f"{md_dir}: no MD trajectories (*.h5) here; run "
                                "`python simulate.py task=md` (or experiment=demo) first")
    return files


def read_trajectory(path) -> Trajectory:
    path = Path(path)
    attrs = store.read_attrs(path)
    md = attrs.get("md")
    if not isinstance(md, dict):
        raise DataError(f"{path}: attribute 'md' missing: not a capml MD trajectory")
    data = store.read(path)
    if "velocities" not in data.labels:
        raise DataError(f"{path}: key 'velocities' missing: expected MD frames with velocities")
    n_frames, n = len(data), int(data.n_atoms[0])
    return Trajectory(
        path=path, name=str(md["name"]), source=str(data.meta["source"][0]),
        x=float(data.meta["x"][0]), temperature=float(md["temperature"]),
        status=str(attrs.get("status", "")), times_fs=np.asarray(data.meta["time"], dtype=float),
        positions=data.positions.reshape(n_frames, n, 3),
        velocities=data.labels["velocities"].reshape(n_frames, n, 3),
        numbers=data.numbers[:n].copy(), cell=data.cell[0].copy(),
        masses=np.asarray(md.get("masses_amu") or Atoms(numbers=data.numbers[:n]).get_masses(),
                          dtype=float))


def read_trajectories(md_dir, include_blown_up: bool = False) -> list[Trajectory]:
    """Every trajectory of ``md_dir``; blown-up runs (an unphysical structure, see
    capml.simulation.md) are left out with a warning unless ``include_blown_up``."""
    out = []
    for path in trajectory_files(md_dir):
        traj = read_trajectory(path)
        if traj.status.startswith(BLOWN_UP) and not include_blown_up:
            log.warning("%s: left out (%s); task.include_blown_up=true analyses it anyway",
                        path, traj.status)
            continue
        out.append(traj)
    if not out:
        raise DataError(f"{md_dir}: every MD trajectory blew up; nothing physical to analyse "
                        "(task.include_blown_up=true overrides)")
    return out


def force_constants_file(phonons_dir, source: str) -> Path:
    path = Path(phonons_dir) / source / "phonopy.yaml"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no harmonic force constants for structure {source!r} "
                                f"(run `python simulate.py task=phonons` on it, or set "
                                "task.phonons_dir)")
    return path


def equilibrated(times_fs: np.ndarray, equilibration_ps: float, where: str) -> np.ndarray:
    """Indices of frames at or after the equilibration window."""
    keep = np.where(np.asarray(times_fs) >= 1e3 * float(equilibration_ps))[0]
    if len(keep) < 2:
        raise ValueError(f"{where}: {len(keep)} frames after task.equilibration_ps = "
                         f"{equilibration_ps} (the run ends at {times_fs[-1] / 1e3:.3f} ps)")
    return keep
