"""Closest interatomic contacts relative to covalent radii: the sign of a collapsed
structure (a relaxation or MD run that an interatomic potential drove unphysical)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase.data import chemical_symbols, covalent_radii
from ase.neighborlist import primitive_neighbor_list


@dataclass(frozen=True)
class Contact:
    ratio: float  # distance / (covalent radius i + covalent radius j)
    distance: float  # A
    i: int
    j: int
    pair: str  # e.g. "Ag-I"

    def describe(self) -> str:
        return f"{self.pair} {self.distance:.3f} A ({self.ratio:.2f})"


def closest_contact(numbers, positions, cell, pbc=(True, True, True),
                    max_ratio: float = 1.5) -> Contact | None:
    """The pair with the smallest distance / covalent-radii sum (periodic images
    included), or None when no pair is within ``max_ratio`` of its sum."""
    numbers = np.asarray(numbers)
    radii = covalent_radii[numbers]
    cutoff = max_ratio * 2 * radii.max()
    i, j, d = primitive_neighbor_list("ijd", pbc, np.asarray(cell, dtype=float),
                                      np.asarray(positions, dtype=float), cutoff)
    if len(d) == 0:
        return None
    ratio = d / (radii[i] + radii[j])
    k = int(np.argmin(ratio))
    if ratio[k] > max_ratio:
        return None
    pair = f"{chemical_symbols[numbers[i[k]]]}-{chemical_symbols[numbers[j[k]]]}"
    return Contact(float(ratio[k]), float(d[k]), int(i[k]), int(j[k]), pair)
