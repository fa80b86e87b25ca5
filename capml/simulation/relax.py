"""Geometry relaxation: BFGS on the internal coordinates, optionally the cell, with
a labeler's fallback settings, and the record of relaxed (or failed) structures.

The paper relaxes with BFGS to a maximum force of 0.01 eV/A. With ``relax_cell``
the cell degrees of freedom enter through an ASE cell filter (Frechet by default),
and convergence also requires the stress-derived generalised forces to be below
``fmax``. ``relax_or_record`` is the one call of every task that relaxes
(relax, enumerate, phonons): a relaxation whose every calculator settings variant
fails comes back as a recorded failure (NaN energy, note 'failed: ...'), so one
bad structure does not abort a run over many.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
from ase import Atoms
from ase.calculators.calculator import CalculationFailed
from ase.calculators.singlepoint import SinglePointCalculator
from ase.optimize import BFGS

log = logging.getLogger(__name__)

CELL_FILTERS = ("frechet", "exp", "unit")


@dataclass(frozen=True)
class RelaxSettings:
    """The ``relax`` config block: arguments of ``relax`` (see there)."""

    fmax: float = 0.01  # eV/A
    max_steps: int = 1000
    relax_cell: bool = False
    cell_filter: str = "frechet"
    keep_symmetry: bool = False
    rattle: float = 0.0  # A

    def __post_init__(self):
        if not self.fmax > 0:
            raise ValueError(f"relax: fmax = {self.fmax} eV/A, expected > 0")
        if self.max_steps < 0:
            raise ValueError(f"relax: max_steps = {self.max_steps}, expected >= 0")
        if self.cell_filter not in CELL_FILTERS:
            raise ValueError(f"relax: cell_filter = {self.cell_filter!r}, expected one of "
                             f"{CELL_FILTERS}")
        if self.rattle < 0:
            raise ValueError(f"relax: rattle = {self.rattle} A, expected >= 0")

    @classmethod
    def from_config(cls, cfg) -> RelaxSettings:
        """The settings from a config node holding the block's keys (extra keys ignored)."""
        return cls(fmax=float(cfg.fmax), max_steps=int(cfg.max_steps),
                   relax_cell=bool(cfg.relax_cell), cell_filter=str(cfg.cell_filter),
                   keep_symmetry=bool(cfg.keep_symmetry), rattle=float(cfg.rattle))


class RelaxError(RuntimeError):
    """The calculator failed during a relaxation; ``atoms`` is the geometry reached."""

    def __init__(self, message: str, atoms: Atoms, n_steps: int):
        super().__init__(message)
        self.atoms, self.n_steps = atoms, n_steps


@dataclass
class RelaxResult:
    atoms: Atoms  # relaxed structure; energy/forces/stress on a SinglePointCalculator
    energy: float  # eV
    max_force: float  # eV/A, largest atomic force norm at the end
    converged: bool
    n_steps: int
    note: str = ""  # free text for callers (e.g. which calculator settings were used)


def relax(atoms: Atoms, calculator, *, fmax: float = 0.01, max_steps: int = 1000,
          relax_cell: bool = False, cell_filter: str = "frechet", keep_symmetry: bool = False,
          rattle: float = 0.0, seed: int = 0, logfile: str | None = None) -> RelaxResult:
    """Relax a copy of ``atoms`` with ``calculator`` (BFGS, ``fmax`` in eV/A).

    ``keep_symmetry`` adds ASE's FixSymmetry constraint (the relaxed structure keeps
    the space group of the start). ``rattle`` (A) displaces every atom by a seeded
    Gaussian of this width first, so that a symmetric saddle point (a dynamically
    unstable cubic cell) can fall into a lower-symmetry minimum instead of staying
    where symmetric forces hold it. Non-converged relaxations are returned with
    ``converged=False``, not raised, so that callers can record them; a calculator
    failure raises RelaxError carrying the geometry reached.
    """
    if fmax <= 0:
        raise ValueError(f"relax: fmax = {fmax} eV/A, expected > 0")
    if relax_cell and cell_filter not in CELL_FILTERS:
        raise ValueError(f"relax: cell_filter = {cell_filter!r}, expected one of {CELL_FILTERS}")
    work = atoms.copy()
    if rattle > 0:
        work.rattle(stdev=rattle, seed=int(seed) % 2**32)
    work.calc = calculator
    if keep_symmetry:
        from ase.constraints import FixSymmetry

        work.set_constraint(FixSymmetry(work))
    target = _cell_filter(work, cell_filter) if relax_cell else work
    opt = BFGS(target, logfile=logfile)
    try:
        converged = bool(opt.run(fmax=fmax, steps=max_steps))
    except (CalculationFailed, RuntimeError, ValueError) as err:
        reached = work.copy()
        reached.set_constraint()
        raise RelaxError(str(err), reached, int(opt.nsteps)) from err
    forces = np.array(work.get_forces())
    results = {"energy": float(work.get_potential_energy()), "forces": forces}
    stress = _stress_or_none(work)
    if stress is not None:
        results["stress"] = stress
    out = work.copy()
    out.set_constraint()
    out.calc = SinglePointCalculator(out, **results)
    max_force = float(np.linalg.norm(forces, axis=1).max()) if len(forces) else 0.0
    if not converged:
        log.warning("relaxation not converged in %d steps: max force %.4f eV/A (fmax %.4f)",
                    max_steps, max_force, fmax)
    return RelaxResult(atoms=out, energy=results["energy"], max_force=max_force,
                       converged=converged, n_steps=int(opt.nsteps))


class RelaxFailed(RuntimeError):
    """Every calculator settings variant failed during a relaxation."""


def relax_with_fallbacks(atoms: Atoms, labeler, settings: RelaxSettings = RelaxSettings(),
                         seed: int = 0) -> RelaxResult:
    """Relax with the labeler's settings; when its calculation fails (e.g. an SCF that
    does not converge), go on from the geometry reached with each of its fallback
    settings in turn. The result's note names the fallback used ('' if none); raises
    RelaxFailed listing every error."""
    errors, start, steps = [], atoms, 0
    for k, override in enumerate([{}] + list(labeler.fallbacks)):
        try:
            result = relax(start, labeler.calculator(**override),
                           seed=seed, **asdict(settings))
        except RelaxError as err:
            message = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
            errors.append(f"{override or 'default'}: {message} (after {err.n_steps} steps)")
            log.warning("relaxation: calculator failed with %s settings after %d steps: %s",
                        override or "default", err.n_steps, message)
            start, steps = err.atoms, steps + err.n_steps
            continue
        result.n_steps += steps
        result.note = f"fallback {k}: {override}" if k else ""
        return result
    raise RelaxFailed("; ".join(errors))


def failed_result(atoms: Atoms, error: str) -> RelaxResult:
    """A RelaxResult standing for a failed relaxation (the start structure, NaN energy)."""
    return RelaxResult(atoms=atoms.copy(), energy=float("nan"), max_force=float("nan"),
                       converged=False, n_steps=0, note=f"failed: {error}"[:1000])


def relax_or_record(atoms: Atoms, labeler, settings: RelaxSettings = RelaxSettings(),
                    seed: int = 0) -> RelaxResult:
    """``relax_with_fallbacks``, with a failure of every variant returned as
    ``failed_result`` (check ``failed(result)``) instead of raised."""
    try:
        return relax_with_fallbacks(atoms, labeler, settings, seed)
    except RelaxFailed as err:
        return failed_result(atoms, str(err))


def failed(result: RelaxResult) -> bool:
    return result.note.startswith("failed")


def describe(result: RelaxResult) -> str:
    """One log line: energy, force, convergence and the fallback used, or the failure."""
    if failed(result):
        return result.note
    state = "converged" if result.converged else "NOT converged"
    note = f" ({result.note})" if result.note else ""
    return (f"E = {result.energy:.6f} eV, max force {result.max_force:.4f} eV/A, {state} in "
            f"{result.n_steps} steps{note}")


def relaxed_set(results, atoms_in, level: str, extra: dict | None = None):
    """Relaxed structures as a StructureSet with the run's metadata (``relax_note``:
    the fallback used, or 'failed: <errors>' with NaN energy)."""
    from capml.data import StructureSet

    out = []
    for res, a in zip(results, atoms_in):
        r = res.atoms
        r.info = {k: v for k, v in a.info.items()
                  if k != "band_gap" and not isinstance(v, (dict, list))}  # gap: not of r
        r.info.update(method="relaxed", level=level, converged=int(res.converged),
                      n_steps=res.n_steps, max_force=res.max_force,
                      source=a.info.get("source", ""), relax_note=res.note)
        out.append(r)
    data = StructureSet.from_atoms(out)
    keys = {k for a in out for k in a.info} - set(data.meta)
    for key in sorted(keys):  # from_atoms keeps schema columns; add the rest
        data.meta[key] = np.asarray([a.info.get(key) for a in out])
    for key, values in (extra or {}).items():
        data.meta[key] = np.asarray(values)
    return data


def _cell_filter(atoms: Atoms, kind: str):
    from ase.filters import ExpCellFilter, FrechetCellFilter, UnitCellFilter

    return {"frechet": FrechetCellFilter, "exp": ExpCellFilter,
            "unit": UnitCellFilter}[kind](atoms)


def _stress_or_none(atoms: Atoms):
    from ase.calculators.calculator import PropertyNotImplementedError

    if not atoms.pbc.all():
        return None
    try:
        return np.array(atoms.get_stress(voigt=True))
    except PropertyNotImplementedError:
        return None
