"""Active learning of a MACE committee: which MD frames to label next.

The round driver is ``capml.tasks.active_learning``; this module holds its pure parts.

Candidates. Every stored MD frame whose committee force spread (the largest per-atom spread,
eV/A) exceeds ``select_threshold``, plus the last stored frame of every replica that stopped
early: the MD stops a replica at the first step above ``max_uncertainty`` ("left the training
domain") and does not store that step, so its last stored frame is the nearest one to where
the committee lost its footing; a replica that blew up with the committee agreeing is
confidently wrong there, and its last frame is what the reference has to correct. A round
without candidates therefore ran every replica to the end below the threshold.

Thinning. Frames of one replica a stride apart are nearly the same configuration: labeling
both costs two reference calculations for about one configuration's information. The
candidates are thinned by greedy farthest-point sampling, started from the most uncertain
frame, on a per-structure descriptor from the committee itself (for each element, the mean
over its atoms of the members' invariant MACE node features, ``MACECalculator
.get_descriptors``): the potential's own features separate what it tells apart, they need no
system-specific choice (unlike a hand-set SOAP), and the per-element mean keeps
compositions apart. The first picks are thus the most uncertain frame and then the frames
least like those already picked (other replicas, temperatures, compositions, times).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from capml.simulation import trajectory as traj_io


@dataclass(frozen=True)
class Candidate:
    trajectory: int  # index into the trajectory list
    frame: int  # frame index in that trajectory
    spread: float  # eV/A, the frame's largest committee force spread
    why: str  # spread above threshold | last frame before leaving the domain | ... blowing up


def candidates(trajectories, select_threshold: float) -> list[Candidate]:
    """The candidate frames of ``trajectories`` (capml Trajectory objects; module docstring)."""
    out = []
    for i, tr in enumerate(trajectories):
        spread = np.asarray(tr.max_force_spread, dtype=float)
        above = set(np.flatnonzero(spread > select_threshold).tolist())
        for f in sorted(above):
            out.append(Candidate(i, f, float(spread[f]), "spread above threshold"))
        last = len(spread) - 1
        if traj_io.stopped(tr.status) and last not in above:
            what = ("leaving the domain" if tr.status.startswith(traj_io.LEFT_DOMAIN)
                    else "blowing up")
            out.append(Candidate(i, last, float(spread[last]), f"last frame before {what}"))
    return out


def structure_descriptor(per_atom: np.ndarray, numbers: np.ndarray, elements) -> np.ndarray:
    """[n_elements x d]: for each of ``elements`` (atomic numbers) the mean of the per-atom
    features ``per_atom`` [n, d] over its atoms (zeros where the structure has none)."""
    numbers = np.asarray(numbers)
    blocks = [per_atom[numbers == z].mean(axis=0) if np.any(numbers == z)
              else np.zeros(per_atom.shape[1]) for z in elements]
    return np.concatenate(blocks)


def committee_descriptors(atoms_list, calc) -> np.ndarray:
    """[structures, features] descriptors of ``atoms_list`` from a MACE (committee)
    calculator: the members' invariant node features, side by side, per element mean."""
    elements = sorted({int(z) for a in atoms_list for z in a.numbers})
    out = []
    for atoms in atoms_list:
        per_atom = calc.get_descriptors(atoms.copy(), invariants_only=True)
        per_atom = np.concatenate(per_atom, axis=1) if isinstance(per_atom, list) else per_atom
        out.append(structure_descriptor(per_atom, atoms.numbers, elements))
    return np.array(out)


def farthest_point_sampling(descriptors: np.ndarray, k: int, first: int) -> list[int]:
    """Greedy farthest-point selection of ``k`` rows of ``descriptors`` [n, d] starting at
    row ``first``: each next pick is the row farthest (Euclidean) from all picked so far.
    Returns the picked rows in picking order (all rows when k >= n)."""
    x = np.asarray(descriptors, dtype=float)
    picked = [int(first)]
    dist = np.linalg.norm(x - x[first], axis=1)
    while len(picked) < min(k, len(x)):
        nxt = int(np.argmax(dist))
        picked.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(x - x[nxt], axis=1))
    return picked


def thin(cands: list[Candidate], descriptors: np.ndarray, max_per_round: int) -> list[int]:
    """Indices into ``cands`` of at most ``max_per_round`` frames (module docstring)."""
    if not cands:
        return []
    first = int(np.argmax([c.spread for c in cands]))
    return farthest_point_sampling(descriptors, max_per_round, first)


def replica_survival(trajectories) -> list[dict]:
    """Per replica: name, how long its MD ran (ps, last stored frame), its status, and the
    largest committee force spread it stored (eV/A)."""
    return [{"replica": tr.name, "x": tr.x, "temperature_K": tr.temperature,
             "survived_ps": float(tr.times_fs[-1]) / 1e3, "status": tr.status,
             "largest_spread_eV_A": traj_io.largest_spread(tr)} for tr in trajectories]
