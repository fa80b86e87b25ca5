"""Geometry relaxation: BFGS on the internal coordinates, optionally the cell.

The paper relaxes with BFGS to a maximum force of 0.01 eV/A. With ``relax_cell``
the cell degrees of freedom enter through an ASE cell filter (Frechet by default),
and convergence also requires the stress-derived generalised forces to be below
``fmax``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.calculators.calculator import CalculationFailed
from ase.calculators.singlepoint import SinglePointCalculator
from ase.optimize import BFGS

log = logging.getLogger(__name__)

CELL_FILTERS = ("frechet", "exp", "unit")


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
