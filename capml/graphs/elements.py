"""Per-element node features from mendeleev's element table.

The features are those of the paper: atomic number, Pauling electronegativity,
standard atomic weight (u) and empirical atomic radius (A, Slater 1964; mendeleev
stores pm). ``element_table()`` returns them as a [119, 4] array indexed by
atomic number (row 0 and unknown values NaN); models store the table in their
checkpoints, so prediction never depends on the installed mendeleev version.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

NODE_FEATURES = ("atomic_number", "pauling_electronegativity", "atomic_mass_u",
                 "atomic_radius_A")
_COLUMNS = ("atomic_number", "en_pauling", "atomic_weight", "atomic_radius")
_SCALE = np.array([1.0, 1.0, 1.0, 0.01])  # atomic_radius pm -> A


@lru_cache(maxsize=1)
def element_table() -> np.ndarray:
    """[119, len(NODE_FEATURES)] float64, row Z = features of element Z (NaN if unknown)."""
    from mendeleev.fetch import fetch_table

    frame = fetch_table("elements")
    table = np.full((119, len(NODE_FEATURES)), np.nan)
    z = frame["atomic_number"].to_numpy(dtype=int)
    table[z] = frame[list(_COLUMNS)].to_numpy(dtype=float) * _SCALE
    table.setflags(write=False)
    return table


def node_features(numbers, table) -> np.ndarray:
    """[n_atoms, n_features] raw (unscaled) features of atoms with atomic ``numbers``."""
    table = np.asarray(table, dtype=float)
    z = np.asarray(numbers, dtype=np.int64)
    if z.size and (z.min() < 1 or z.max() >= len(table)):
        raise ValueError(f"atomic number {int(z.min() if z.min() < 1 else z.max())} is "
                         f"outside the element table (1..{len(table) - 1})")
    feats = table[z]
    bad = ~np.isfinite(feats)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        from ase.data import chemical_symbols

        raise ValueError(f"element {chemical_symbols[z[row]]} (Z = {z[row]}) has no "
                         f"'{NODE_FEATURES[col]}' in the element table; the GNN cannot "
                         "featurise it")
    return feats
