"""MD trajectories as capml HDF5 data sets: one file per replica, resumable.

Each frame is one structure row of the capml.data layout (positions in A,
unwrapped; cell; numbers) with labels ``energy`` (potential, eV), ``forces``
(eV/A), ``velocities`` (A/fs) and optionally ``stress``, and metadata
``step``, ``time`` (fs), ``temperature`` (the thermostat's target, K),
``kinetic_temperature`` (K, 3N degrees of freedom), ``kinetic_energy`` (eV),
``x``, ``method`` = "md", ``level``, ``seed``, ``source`` and ``rng_state``: the
replica's random-generator state after the frame's step (JSON), which makes a
resumed run continue with exactly the random numbers an uninterrupted run draws.

``max_force_spread`` (eV/A): the largest per-atom force spread of a committee
potential at the frame (NaN for a single model).

File attributes: ``md`` (the replica's identity and integrator settings; a
resume with other settings is refused), ``status`` (running | finished |
blown up: <reason> | left the training domain: <spread>), and the generating config.

Writing (``create``, ``append``, ``set_status``: capml.data's guarded writer, so a full
disk raises with every stored frame kept) is for the MD driver; reading
(``read_trajectory``, ``read_trajectories``) is for analyses. A simulation directory
(e.g. of ``simulate.py experiment=demo``) holds ``phonons/<structure id>/phonopy.yaml``
and ``md/<structure id>_T<T>K.h5``; a trajectory's ``source`` metadata is the
structure id, which links it to its harmonic force constants.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms

from capml.data import DataError, StructureSet, store

log = logging.getLogger(__name__)

STATUS_RUNNING, STATUS_FINISHED, BLOWN_UP = "running", "finished", "blown up"
LEFT_DOMAIN = "left the training domain"  # committee spread above max_uncertainty

# Settings that must match for a run to continue an existing trajectory file.
IDENTITY_KEYS = ("name", "temperature", "seed", "timestep_fs", "friction_per_fs", "stride",
                 "numbers", "level")


@dataclass
class Frame:
    step: int
    positions: np.ndarray  # [n, 3] A
    velocities: np.ndarray  # [n, 3] A/fs
    energy: float  # eV, potential
    forces: np.ndarray  # [n, 3] eV/A
    kinetic_energy: float  # eV
    kinetic_temperature: float  # K
    rng_state: str  # JSON of the bit generator state after this step
    stress: np.ndarray | None = None  # [6] eV/A^3
    max_force_spread: float = float("nan")  # eV/A, committee spread (NaN: single model)


def stopped(status: str) -> bool:
    """True for a replica stopped early (blown up or left the training domain)."""
    return status.startswith((BLOWN_UP, LEFT_DOMAIN))


def frames_to_set(frames: list[Frame], numbers, cell, identity: dict, meta: dict
                  ) -> StructureSet:
    """Frames of one replica as a StructureSet (rows in order); ``meta`` holds
    per-replica columns (x, source, ...)."""
    from capml.data.structure_set import normalise_meta

    n = len(frames)
    dt = float(identity["timestep_fs"])
    labels = {
        "energy": np.array([f.energy for f in frames]),
        "forces": np.concatenate([f.forces for f in frames]),
        "velocities": np.concatenate([f.velocities for f in frames]),
    }
    if frames[0].stress is not None:
        labels["stress"] = np.array([f.stress for f in frames])
    columns = {
        "id": [f"{identity['name']}-{f.step:08d}" for f in frames],
        "method": ["md"] * n,
        "temperature": [float(identity["temperature"])] * n,
        "seed": [int(identity["seed"])] * n,
        "level": [identity["level"]] * n,
        "step": np.array([f.step for f in frames], dtype=np.int64),
        "time": np.array([f.step * dt for f in frames]),
        "kinetic_energy": np.array([f.kinetic_energy for f in frames]),
        "kinetic_temperature": np.array([f.kinetic_temperature for f in frames]),
        "max_force_spread": np.array([f.max_force_spread for f in frames]),
        "rng_state": np.array([f.rng_state for f in frames], dtype=object),
        **{k: [v] * n for k, v in meta.items()},
    }
    return StructureSet(
        n_atoms=np.full(n, len(numbers), dtype=np.int64),
        numbers=np.tile(np.asarray(numbers, dtype=np.int64), n),
        positions=np.concatenate([f.positions for f in frames]),
        cell=np.repeat(np.asarray(cell, dtype=float)[None], n, axis=0),
        pbc=np.ones((n, 3), dtype=bool),
        labels=labels,
        meta=normalise_meta(columns, n),
    )


def create(path: Path, frame: Frame, numbers, cell, identity: dict, meta: dict,
           config: str | None = None) -> None:
    """Start a trajectory file with its first frame (atomic write)."""
    store.write(path, frames_to_set([frame], numbers, cell, identity, meta), config=config,
                attrs={"md": identity, "status": STATUS_RUNNING})


def append(path: Path, frames: list[Frame], numbers, cell, identity: dict, meta: dict) -> None:
    """Append frames (data first, then the row count, then flush: crash-safe)."""
    if frames:
        store.append(path, frames_to_set(frames, numbers, cell, identity, meta))


def set_status(path: Path, status: str) -> None:
    store.set_attrs(path, status=status)


def status(path: Path) -> str:
    return str(store.read_attrs(path).get("status", ""))


def last_frame(path: Path, identity: dict) -> Frame:
    """The last frame stored in ``path``, after checking that the file belongs to a
    replica with the same ``identity`` (IDENTITY_KEYS)."""
    attrs = store.read_attrs(path)
    stored = attrs.get("md")
    if not isinstance(stored, dict):
        raise DataError(f"{path}: attribute 'md' missing: not a capml MD trajectory")
    for key in IDENTITY_KEYS:
        if _normal(stored.get(key)) != _normal(identity.get(key)):
            raise DataError(f"{path}: cannot resume: it was run with {key} = "
                            f"{stored.get(key)!r}, this run has {identity.get(key)!r} "
                            "(use another output directory, or delete the file to restart)")
    n = store.count(path)
    last = store.read_range(path, n - 1, n)
    return Frame(
        step=int(last.meta["step"][0]),
        positions=last.positions.copy(),
        velocities=last.labels["velocities"].copy(),
        energy=float(last.labels["energy"][0]),
        forces=last.labels["forces"].copy(),
        kinetic_energy=float(last.meta["kinetic_energy"][0]),
        kinetic_temperature=float(last.meta["kinetic_temperature"][0]),
        rng_state=str(last.meta["rng_state"][0]),
        stress=last.labels["stress"][0].copy() if "stress" in last.labels else None,
        max_force_spread=float(last.meta.get("max_force_spread", [np.nan])[0]),
    )


# ------------------------------------------------------------------ reading
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
    max_force_spread: np.ndarray  # [frames] eV/A, committee spread (NaN: single model)

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
                          dtype=float),
        max_force_spread=np.asarray(data.meta.get("max_force_spread", np.full(n_frames, np.nan)),
                                    dtype=float))


def read_trajectories(md_dir, include_blown_up: bool = False) -> list[Trajectory]:
    """Every trajectory of ``md_dir``; runs stopped early (blown up: an unphysical
    structure; left the training domain: committee spread above the limit; see
    capml.simulation.md) are left out with a warning unless ``include_blown_up``."""
    out = []
    for path in trajectory_files(md_dir):
        traj = read_trajectory(path)
        if stopped(traj.status) and not include_blown_up:
            log.warning("%s: left out (%s); task.include_blown_up=true analyses it anyway",
                        path, traj.status)
            continue
        out.append(traj)
    if not out:
        raise DataError(f"{md_dir}: every MD trajectory blew up or left the training domain; "
                        "nothing to analyse (task.include_blown_up=true overrides)")
    return out


UNCERTAINTY_POLICIES = ("refuse", "flag")


def within_uncertainty(traj: Trajectory, max_uncertainty, policy: str = "refuse"
                       ) -> tuple[Trajectory, int]:
    """(trajectory to analyse, number of its frames whose committee force spread exceeds
    ``max_uncertainty`` eV/A). ``refuse`` cuts the run before its first such frame (time
    series stay contiguous, as an MD run with task.max_uncertainty stops there); ``flag``
    keeps every frame and only counts them. ``max_uncertainty`` None: no check."""
    if policy not in UNCERTAINTY_POLICIES:
        raise ValueError(f"task.beyond_uncertainty = {policy!r}: expected one of "
                         f"{UNCERTAINTY_POLICIES}")
    if max_uncertainty is None:
        return traj, 0
    spread = traj.max_force_spread
    if np.isnan(spread).all():
        raise DataError(f"{traj.path}: key 'max_force_spread' holds no committee spread (run "
                        "with a single potential), but task.max_uncertainty = "
                        f"{max_uncertainty} eV/A needs one (set it to null)")
    beyond = spread > float(max_uncertainty)
    if policy == "flag" or not beyond.any():
        return traj, int(beyond.sum())
    n = int(np.argmax(beyond))
    log.warning("%s: frames from %.3f ps on exceed max_uncertainty %g eV/A (committee spread "
                "%.3f eV/A): analysed up to there", traj.path, traj.times_fs[n] / 1e3,
                float(max_uncertainty), spread[n])
    cut = dataclasses.replace(traj, times_fs=traj.times_fs[:n], positions=traj.positions[:n],
                              velocities=traj.velocities[:n], max_force_spread=spread[:n])
    return cut, int(beyond.sum())


def largest_spread(traj: Trajectory) -> float:
    """Largest committee force spread (eV/A) over the frames; NaN without a committee."""
    spread = traj.max_force_spread
    return float(np.nanmax(spread)) if np.isfinite(spread).any() else float("nan")


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


def rng_from_state(state: str) -> np.random.Generator:
    """A numpy Generator restored from ``json.dumps(generator.bit_generator.state)``."""
    data = json.loads(state)
    bit_generator = getattr(np.random, data["bit_generator"])()
    bit_generator.state = data
    return np.random.Generator(bit_generator)


def rng_state(rng: np.random.Generator) -> str:
    return json.dumps(rng.bit_generator.state)


def _normal(value):
    """Comparable form of identity values (JSON round trip, floats to 12 digits)."""
    value = json.loads(json.dumps(value))
    if isinstance(value, float):
        return round(value, 12)
    return value
