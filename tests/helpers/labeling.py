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
