"""Small EMT labeling fixtures shared by the labeling and shard tests."""

from __future__ import annotations

import numpy as np
from ase.build import bulk

from capml.data import StructureSet

EMT_CFG = {"_target_": "capml.calculators.reference.ase_calculator", "level": "emt",
           "calculator": {"_target_": "ase.calculators.emt.EMT", "_partial_": True}}


def copper_set(n, reps=(2, 2, 2), seed=0) -> StructureSet:
    """``n`` fcc Cu supercells with seeded Gaussian displacements (0.05 A), ids cu0, cu1, ..."""
    rng = np.random.default_rng(seed)
    atoms = []
    for i in range(n):
        a = bulk("Cu", cubic=True) * reps
        a.positions += rng.normal(0, 0.05, a.positions.shape)
        a.info.update(id=f"cu{i}", method="uniform")
        atoms.append(a)
    return StructureSet.from_atoms(atoms)


def emt_labeled_copper(n: int, rattle: float = 0.05, strain: float = 0.01, seed: int = 4):
    """``n`` fcc Cu cells (4 atoms) strained by up to ``strain`` and rattled by ``rattle`` A
    (seeded), with EMT energy, forces and stress as their labels; ids cu-000, cu-001, ..."""
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator

    rng = np.random.default_rng(seed)
    cells = []
    for i in range(n):
        atoms = bulk("Cu", "fcc", a=3.61 * (1 + rng.uniform(-strain, strain)), cubic=True)
        atoms.positions += rng.normal(0, rattle, atoms.positions.shape)
        atoms.calc = EMT()
        res = dict(energy=atoms.get_potential_energy(), forces=atoms.get_forces(),
                   stress=atoms.get_stress())
        atoms.calc = SinglePointCalculator(atoms, **res)
        atoms.info.update(id=f"cu-{i:03d}", level="emt", label_status="ok", method="uniform",
                          x=0.0)
        cells.append(atoms)
    return cells
