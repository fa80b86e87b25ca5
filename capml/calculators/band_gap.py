"""Band gaps from eigenvalues and occupations (spin- and k-point aware)."""

from __future__ import annotations

import numpy as np


def gap_from_eigenvalues(eigenvalues, occupations, occupied_fraction: float = 0.5) -> float:
    """Fundamental gap (eV if eigenvalues are eV): lowest unoccupied minus highest
    occupied level over all spins and k-points, 0 for a metal.

    ``eigenvalues`` and ``occupations`` have the same shape, e.g. [spin, k, band];
    occupations may be per spin channel (max 1) or spin-summed (max 2): a level is
    occupied when its occupation exceeds ``occupied_fraction`` of the largest one.
    """
    e = np.asarray(eigenvalues, dtype=float).ravel()
    f = np.asarray(occupations, dtype=float).ravel()
    if e.shape != f.shape or e.size == 0:
        raise ValueError(f"eigenvalues {np.shape(eigenvalues)} and occupations "
                         f"{np.shape(occupations)} must have the same non-empty shape")
    occupied = f > occupied_fraction * f.max()
    if occupied.all() or not occupied.any():
        raise ValueError("cannot define a gap: all levels are occupied or none is "
                         "(add empty bands or check the occupations)")
    vbm, cbm = e[occupied].max(), e[~occupied].min()
    return float(max(0.0, cbm - vbm))


def gap_from_electron_count(eigenvalues, n_electrons: float, spin_degeneracy: int = 2) -> float:
    """Gap of a spin-restricted, single-k calculation from the electron count
    (robust to Fermi smearing): e[n_occ] - e[n_occ - 1] with n_occ = N / 2."""
    e = np.sort(np.asarray(eigenvalues, dtype=float).ravel())
    n_occ = int(round(n_electrons / spin_degeneracy))
    if not 0 < n_occ < len(e):
        raise ValueError(f"{n_occ} occupied levels out of {len(e)}: no gap defined")
    return float(max(0.0, e[n_occ] - e[n_occ - 1]))
