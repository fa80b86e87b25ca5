"""Langevin NVT molecular dynamics of many replicas in lockstep.

The propagator is ASE's ``Langevin`` (Vanden-Eijnden & Ciccotti 2006, Eq. 23;
ASE 3.29 with ``fixcm=False``), vectorised over the concatenated atoms of all
replicas and written in A, fs, eV and amu (velocities in A/fs, the unit of the
trajectory files, so that a resumed run restarts from exactly the stored state).
Each replica owns its random generator and draws its noise as ASE does (xi, then
eta, each [n, 3], every step), so a replica's trajectory does not depend on which
other replicas share its batch, and one replica with the same generator follows
ASE's Langevin to rounding error.

Forces come from an ``Evaluator`` (capml.simulation.forces): one batched MACE
call for all replicas, or one ASE calculation per replica.

A run writes a frame every ``stride`` steps into one HDF5 file per replica
(capml.simulation.trajectory), flushed at least every ``flush_interval_s``
seconds; rerunning the same command resumes every replica from its last stored
frame. A replica that blows up (non-finite energy or forces, kinetic temperature
above ``max_temperature_factor`` x target, two atoms closer than ``min_contact``
x the sum of their covalent radii) stops with its frames kept and its status recorded; the others
go on. With a committee potential every frame stores ``max_force_spread`` (the largest per-atom
force spread of the committee, eV/A; NaN for a single model), and a replica whose spread exceeds
``max_uncertainty`` stops as "left the training domain" (checked before the temperature and
contact checks: an uncertain potential is not evidence of a physical blow-up).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms, units

from capml.simulation import trajectory as traj
from capml.simulation.forces import Evaluator
from capml.structures.contacts import closest_contact

log = logging.getLogger(__name__)

# amu -> eV fs^2 / A^2: ASE's time unit is sqrt(A^2 amu / eV) and 1 fs = units.fs of it.
AMU_TO_EV_FS2_A2 = 1.0 / units.fs**2


@dataclass(frozen=True)
class LangevinSettings:
    timestep_fs: float = 1.0
    friction_per_fs: float = 1e-3
    n_steps: int = 1000  # total steps of the run (a resumed run continues to this step)
    stride: int = 10  # steps between stored frames
    zero_momentum: bool = True  # remove the centre-of-mass momentum of the start velocities
    max_temperature_factor: float = 3.0  # blow-up: kinetic T above this times the target
    min_contact: float = 0.7  # blow-up: two atoms closer than this x their covalent-radii sum
    stress: bool = False  # store the stress of every frame
    max_uncertainty: float | None = None  # eV/A: stop above this committee force spread
    log_interval_s: float = 30.0
    flush_interval_s: float = 30.0

    def __post_init__(self):
        checks = {"timestep_fs": self.timestep_fs > 0, "friction_per_fs": self.friction_per_fs >= 0,
                  "n_steps": self.n_steps >= 0, "stride": self.stride >= 1,
                  "max_temperature_factor": self.max_temperature_factor > 1,
                  "min_contact": self.min_contact >= 0,
                  "max_uncertainty": self.max_uncertainty is None or self.max_uncertainty > 0}
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"MD settings: invalid {bad[0]} = {getattr(self, bad[0])} "
                             "(timestep_fs > 0, friction_per_fs >= 0, n_steps >= 0, stride >= 1, "
                             "max_temperature_factor > 1, min_contact >= 0, max_uncertainty > 0 "
                             "or null)")


@dataclass
class Replica:
    name: str  # unique within a run; names the trajectory file
    atoms: Atoms  # start structure (masses from ase)
    temperature: float  # K, thermostat target
    seed: int  # seeds the Maxwell-Boltzmann start and the Langevin noise
    meta: dict = field(default_factory=dict)  # per-frame metadata columns (x, source, ...)


@dataclass
class Outcome:
    name: str
    path: Path
    status: str  # finished | blown up: <reason> | left the training domain: <spread>
    last_step: int
    steps_run: int  # steps integrated in this call
    wall_s: float


class BlowUp(RuntimeError):
    """One or more replicas blew up; their frames up to the failure are kept."""


def langevin_coefficients(masses_amu: np.ndarray, temperature_K: np.ndarray, dt: float,
                          friction: float) -> dict[str, np.ndarray]:
    """ASE's Langevin coefficients per atom ([n, 1]) in A, fs, eV units."""
    m = masses_amu[:, None] * AMU_TO_EV_FS2_A2
    sigma = np.sqrt(2.0 * units.kB * temperature_K[:, None] * friction / m)
    c5 = dt**1.5 * sigma / (2.0 * np.sqrt(3.0))
    return {"m": m,
            "c1": dt / 2.0 - dt * dt * friction / 8.0,
            "c2": dt * friction / 2.0 - dt * dt * friction * friction / 8.0,
            "c3": np.sqrt(dt) * sigma / 2.0 - dt**1.5 * friction * sigma / 8.0,
            "c4": friction / 2.0 * c5,
            "c5": c5}


def kinetic(velocities: np.ndarray, m: np.ndarray, offsets: np.ndarray):
    """Kinetic energy (eV) and temperature (K, 3N degrees of freedom) per replica."""
    e_atom = 0.5 * np.sum(m * velocities**2, axis=1)
    ke = np.add.reduceat(e_atom, offsets[:-1])
    return ke, 2.0 * ke / (3.0 * np.diff(offsets) * units.kB)


def maxwell_boltzmann(atoms: Atoms, temperature_K: float, rng: np.random.Generator,
                      zero_momentum: bool = True) -> np.ndarray:
    """Start velocities (A/fs) drawn with ASE from a Maxwell-Boltzmann distribution."""
    from ase.md.velocitydistribution import Stationary, thermalize_momenta

    work = atoms.copy()
    thermalize_momenta(work, temperature_K, rng=rng)
    if zero_momentum:
        Stationary(work)
    return work.get_velocities() * units.fs


class _State:
    """Concatenated state of the active replicas."""

    def __init__(self, replicas, x, v, steps, rngs, make_evaluator, settings, forces=None,
                 energies=None, stresses=None, spread=None):
        self.replicas, self.rngs = replicas, rngs
        self.steps = np.asarray(steps, dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum([len(r.atoms) for r in replicas])])
        self.x, self.v = x, v
        masses = np.concatenate([r.atoms.get_masses() for r in replicas])
        temps = np.concatenate([np.full(len(r.atoms), r.temperature) for r in replicas])
        self.c = langevin_coefficients(masses, temps, settings.timestep_fs,
                                       settings.friction_per_fs)
        self.evaluator = make_evaluator([r.atoms for r in replicas])
        self.stress_wanted = settings.stress
        if forces is None:
            self.energy, self.forces, self.stress = self.evaluator(x, stress=settings.stress)
            self.spread = self._max_spread()
        else:
            self.energy, self.forces, self.stress = energies, forces, stresses
            self.spread = spread
        if settings.max_uncertainty is not None and np.isnan(self.spread).any():
            raise ValueError(f"max_uncertainty = {settings.max_uncertainty} eV/A needs a "
                             "committee potential (calculator.model = a committee folder with "
                             "committee.json); this calculator reports no force spread")

    def _max_spread(self) -> np.ndarray:
        """Largest per-atom committee force spread (eV/A) per replica; NaN without one."""
        spread = getattr(self.evaluator, "spread", None)
        if spread is None:
            return np.full(len(self.replicas), np.nan)
        return spread.max_force(self.offsets)

    def slice(self, r: int) -> slice:
        return slice(self.offsets[r], self.offsets[r + 1])

    def noise(self):
        xi, eta = [], []
        for r, rng in enumerate(self.rngs):
            n = self.offsets[r + 1] - self.offsets[r]
            xi.append(rng.standard_normal(size=(n, 3)))
            eta.append(rng.standard_normal(size=(n, 3)))
        return np.concatenate(xi), np.concatenate(eta)

    def step(self, dt: float) -> None:
        """One Langevin step of every active replica (ASE's update order)."""
        c = self.c
        xi, eta = self.noise()
        rnd_pos = c["c5"] * eta
        rnd_vel = c["c3"] * xi - c["c4"] * eta
        self.v += c["c1"] * self.forces / c["m"] - c["c2"] * self.v + rnd_vel
        x_old = self.x
        self.x = x_old + dt * self.v + rnd_pos
        self.v = (self.x - x_old - rnd_pos) / dt
        self.energy, self.forces, self.stress = self.evaluator(self.x, stress=self.stress_wanted)
        self.spread = self._max_spread()
        self.v += c["c1"] * self.forces / c["m"] - c["c2"] * self.v + rnd_vel
        self.steps += 1

    def frame(self, r: int, ke: float, temperature: float) -> traj.Frame:
        s = self.slice(r)
        return traj.Frame(step=int(self.steps[r]), positions=self.x[s].copy(),
                          velocities=self.v[s].copy(), energy=float(self.energy[r]),
                          forces=self.forces[s].copy(), kinetic_energy=float(ke),
                          kinetic_temperature=float(temperature),
                          rng_state=traj.rng_state(self.rngs[r]),
                          max_force_spread=float(self.spread[r]),
                          stress=None if self.stress is None else self.stress[r].copy())

    def keep(self, keep: list[int], make_evaluator, settings) -> _State:
        """State of the replicas ``keep`` only (forces carried over)."""
        atoms = np.concatenate([np.arange(self.offsets[r], self.offsets[r + 1]) for r in keep])
        return _State([self.replicas[r] for r in keep], self.x[atoms], self.v[atoms],
                      self.steps[keep], [self.rngs[r] for r in keep], make_evaluator, settings,
                      forces=self.forces[atoms], energies=self.energy[keep],
                      stresses=None if self.stress is None else self.stress[keep],
                      spread=self.spread[keep])


def run(replicas: list[Replica], make_evaluator: Callable[[list[Atoms]], Evaluator],
        settings: LangevinSettings, out_dir, *, level: str, config: str | None = None,
        raise_on_blowup: bool = True) -> list[Outcome]:
    """Run (or resume) every replica to ``settings.n_steps``; trajectories in
    ``out_dir/<name>.h5``. Raises BlowUp after the other replicas finished when any
    replica blew up (unless ``raise_on_blowup`` is False)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = [r.name for r in replicas]
    if len(set(names)) != len(names):
        raise ValueError(f"MD replicas need unique names, got {names}")
    t0 = time.perf_counter()
    outcomes: dict[str, Outcome] = {}
    starts = []
    for rep in replicas:
        if not rep.temperature > 0:
            raise ValueError(f"replica {rep.name}: temperature {rep.temperature} K, expected > 0")
        path = out_dir / f"{rep.name}.h5"
        identity = _identity(rep, settings, level)
        start = _start(rep, path, identity, settings)
        if isinstance(start, Outcome):
            outcomes[rep.name] = start
        else:
            starts.append(start)
    if starts:
        _integrate(starts, make_evaluator, settings, outcomes, t0, config)
    result = [outcomes[n] for n in names]
    failed = [o for o in result if traj.stopped(o.status)]
    if failed and raise_on_blowup:
        raise BlowUp("; ".join(f"{o.name}: {o.status} (frames up to step {o.last_step} kept "
                               f"in {o.path})" for o in failed))
    return result


def _identity(rep: Replica, settings: LangevinSettings, level: str) -> dict:
    return {"name": rep.name, "temperature": float(rep.temperature), "seed": int(rep.seed),
            "timestep_fs": settings.timestep_fs, "friction_per_fs": settings.friction_per_fs,
            "stride": settings.stride, "numbers": [int(z) for z in rep.atoms.numbers],
            "level": level, "n_steps": settings.n_steps,
            "masses_amu": [float(m) for m in rep.atoms.get_masses()]}


@dataclass
class _Start:
    """Where one replica continues from."""

    replica: Replica
    path: Path
    identity: dict
    positions: np.ndarray  # A
    velocities: np.ndarray  # A/fs
    step: int
    rng: np.random.Generator
    new: bool  # no file yet: frame 0 is written first


def _start(rep, path, identity, settings) -> _Start | Outcome:
    """The state to continue from, or an Outcome when the replica has nothing left to do."""
    if not path.exists():
        rng = np.random.default_rng(rep.seed)
        v0 = maxwell_boltzmann(rep.atoms, rep.temperature, rng, settings.zero_momentum)
        return _Start(rep, path, identity, rep.atoms.positions.copy(), v0, 0, rng, True)
    status = traj.status(path)
    frame = traj.last_frame(path, identity)
    if traj.stopped(status):
        log.error("%s: not resumed (%s; last frame at step %d in %s)", rep.name, status,
                  frame.step, path)
        return Outcome(rep.name, path, status, frame.step, 0, 0.0)
    if frame.step >= settings.n_steps:
        if status != traj.STATUS_FINISHED:
            traj.set_status(path, traj.STATUS_FINISHED)
        log.info("%s: already at step %d of %d (%s)", rep.name, frame.step, settings.n_steps,
                 path)
        return Outcome(rep.name, path, traj.STATUS_FINISHED, frame.step, 0, 0.0)
    log.info("%s: resuming from step %d (%s)", rep.name, frame.step, path)
    return _Start(rep, path, identity, frame.positions, frame.velocities, frame.step,
                  traj.rng_from_state(frame.rng_state), False)


def _integrate(starts, make_evaluator, settings: LangevinSettings, outcomes, t0,
               config) -> None:
    reps = [s.replica for s in starts]
    info = {s.replica.name: {"path": s.path, "identity": s.identity, "first_step": s.step,
                             "stored": s.step, "buffer": []} for s in starts}
    state = _State(reps, np.concatenate([s.positions for s in starts]),
                   np.concatenate([s.velocities for s in starts]), [s.step for s in starts],
                   [s.rng for s in starts], make_evaluator, settings)
    ke, temps = kinetic(state.v, state.c["m"], state.offsets)
    for r, s in enumerate(starts):
        if s.new:  # frame 0: the Maxwell-Boltzmann start, forces from the batched call above
            rep = s.replica
            traj.create(s.path, state.frame(r, ke[r], temps[r]), rep.atoms.numbers,
                        rep.atoms.cell.array, s.identity, rep.meta, config)
            log.info("%s: started at %g K (Maxwell-Boltzmann draw %.0f K) -> %s", rep.name,
                     rep.temperature, temps[r], s.path)
    if settings.n_steps == 0:
        for rep in reps:
            traj.set_status(info[rep.name]["path"], traj.STATUS_FINISHED)
            outcomes[rep.name] = Outcome(rep.name, info[rep.name]["path"],
                                         traj.STATUS_FINISHED, 0, 0, 0.0)
        return
    progress = _Progress(settings.n_steps, [s.step for s in starts], settings.log_interval_s)
    last_flush = time.perf_counter()
    dt = settings.timestep_fs
    while state is not None:
        state.step(dt)
        ke, temps = kinetic(state.v, state.c["m"], state.offsets)
        done = []
        for r, rep in enumerate(state.replicas):
            step, rinfo = int(state.steps[r]), info[rep.name]
            reason = _check(state, r, temps[r], settings, step % settings.stride == 0)
            status = reason
            if not reason and (step % settings.stride == 0 or step == settings.n_steps):
                rinfo["buffer"].append(state.frame(r, ke[r], temps[r]))
                rinfo["stored"] = step
            if not reason and step >= settings.n_steps:
                status = traj.STATUS_FINISHED
            if not status:
                continue
            _flush(rep, rinfo)
            traj.set_status(rinfo["path"], status)
            if reason:
                log.error("%s stopped at step %d: %s; frames up to step %d kept in %s",
                          rep.name, step, reason, rinfo["stored"], rinfo["path"])
            outcomes[rep.name] = Outcome(rep.name, rinfo["path"], status, rinfo["stored"],
                                         step - rinfo["first_step"], time.perf_counter() - t0)
            done.append(r)
        progress.update(state, temps)
        if time.perf_counter() - last_flush >= settings.flush_interval_s:
            for rep in state.replicas:
                _flush(rep, info[rep.name])
            last_flush = time.perf_counter()
        if done:
            keep = [r for r in range(len(state.replicas)) if r not in done]
            state = state.keep(keep, make_evaluator, settings) if keep else None


def _check(state: _State, r: int, temperature: float, settings: LangevinSettings,
           check_distance: bool) -> str:
    """Why replica r stops ('blown up: ...' or 'left the training domain: ...'), or ''."""
    s = state.slice(r)
    target = state.replicas[r].temperature
    if not (np.isfinite(state.energy[r]) and np.isfinite(state.forces[s]).all()
            and np.isfinite(state.x[s]).all()):
        return f"{traj.BLOWN_UP}: non-finite energy, forces or positions"
    limit = settings.max_uncertainty
    if limit is not None and state.spread[r] > limit:
        return (f"{traj.LEFT_DOMAIN}: committee force spread {state.spread[r]:.3f} eV/A above "
                f"max_uncertainty {limit:g} eV/A")
    if temperature > settings.max_temperature_factor * target:
        return (f"{traj.BLOWN_UP}: kinetic temperature {temperature:.0f} K above "
                f"{settings.max_temperature_factor:g} x target {target:g} K")
    if check_distance and settings.min_contact > 0:
        atoms = state.replicas[r].atoms
        hit = closest_contact(atoms.numbers, state.x[s], atoms.cell.array,
                              max_ratio=settings.min_contact)
        if hit is not None and hit.ratio < settings.min_contact:
            sym = atoms.get_chemical_symbols()
            return (f"{traj.BLOWN_UP}: atoms {hit.i} ({sym[hit.i]}) and {hit.j} ({sym[hit.j]}) "
                    f"{hit.distance:.3f} A apart, {hit.ratio:.2f} x their covalent radii "
                    f"(min_contact {settings.min_contact:g})")
    return ""


def _flush(rep: Replica, info: dict) -> None:
    traj.append(info["path"], info["buffer"], rep.atoms.numbers, rep.atoms.cell.array,
                info["identity"], rep.meta)
    info["buffer"] = []


class _Progress:
    def __init__(self, n_steps: int, first_steps, interval_s: float):
        self.n_steps, self.interval = n_steps, interval_s
        self.todo = sum(n_steps - s for s in first_steps)
        self.done = 0
        self.t0 = self.t_last = time.perf_counter()

    def update(self, state: _State, temps) -> None:
        self.done += len(state.replicas)
        now = time.perf_counter()
        if now - self.t_last < self.interval:
            return
        self.t_last = now
        rate = self.done / (now - self.t0)
        eta = (self.todo - self.done) / rate if rate > 0 else float("inf")
        temps_txt = ", ".join(f"{rep.name} {t:.0f} K" for rep, t in zip(state.replicas, temps))
        log.info("md: step %d/%d, %.1f replica-steps/s, ETA %s; T_kin: %s",
                 int(state.steps.min()), self.n_steps, rate,
                 time.strftime("%H:%M:%S", time.gmtime(eta)), temps_txt)
