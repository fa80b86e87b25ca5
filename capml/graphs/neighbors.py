"""Periodic radius neighbour lists (vesin), the same pairs as ase.neighborlist.

Edges are directed and come in both directions (i -> j and j -> i); periodic
images of an atom itself within the cutoff are kept (i == j, shift != 0), only
the atom's own zero-shift self pair is excluded, as in
``ase.neighborlist.neighbor_list(..., self_interaction=False)``.
"""

from __future__ import annotations

import numpy as np
import vesin


def radius_edges(positions, cell, pbc, cutoff: float):
    """Directed edges within ``cutoff`` (A) of one structure.

    Returns ``(source, target, distance)``: int64 [E], int64 [E], float64 [E] (A),
    where the edge carries a message from atom ``source`` to atom ``target``
    (the neighbour j of centre i: source = j, target = i).
    """
    if cutoff <= 0:
        raise ValueError(f"graph cutoff {cutoff} A: expected a positive radius")
    pbc = np.asarray(pbc, dtype=bool)
    box = np.asarray(cell, dtype=float)
    if not pbc.any():
        box = np.zeros((3, 3))
    elif abs(np.linalg.det(box)) < 1e-9:
        raise ValueError("periodic structure with a singular cell: cannot build a radius graph")
    nl = vesin.NeighborList(cutoff=float(cutoff), full_list=True)
    i, j, d = nl.compute(np.asarray(positions, dtype=float), box, pbc, quantities="ijd")
    return j.astype(np.int64), i.astype(np.int64), d.astype(np.float64)
