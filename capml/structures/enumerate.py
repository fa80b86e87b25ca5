"""Symmetry-distinct orderings of a substituted sublattice.

The space group of the parent supercell (spglib, with sites typed by their
sublattice label so that the substituted sublattice is recognised even when
another sublattice holds the same species) acts on the substituted sites as a
permutation group G (phonopy's ``compute_all_sg_permutations``). Two orderings of
k dopants are equivalent when some g in G maps one onto the other; the
multiplicity of an ordering is the size of its orbit, and the multiplicities of
all distinct orderings add up to C(n, k).

- ``count_distinct``: the number of orbits by Burnside's lemma (cycle index of G),
  exact and cheap for any n and k.
- ``enumerate_distinct``: every orbit, with a canonical representative and its
  multiplicity (used when the number of orbits is at most ``max_configs``).
- ``sample_distinct``: seeded random orderings, deduplicated up to symmetry
  (used above ``max_configs``); drawing uniform random k-subsets hits each orbit
  with probability proportional to its multiplicity.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import spglib
from ase import Atoms
from phonopy.structure.cells import compute_all_sg_permutations

from capml.structures.system import System


@dataclass(frozen=True)
class Ordering:
    """One symmetry-distinct ordering: ``sites`` are sublattice-site numbers
    (0..n-1, positions in ``System.sublattice_indices``) holding the dopant."""

    sites: tuple[int, ...]
    multiplicity: int  # orderings of the C(n, k) equivalent to this one (orbit size)


@dataclass(frozen=True)
class Enumeration:
    n_sites: int  # substituted sites in the supercell
    k: int  # dopant sites
    n_operations: int  # |G|: space-group operations of the parent supercell
    n_distinct: int  # symmetry-distinct orderings (Burnside)
    orderings: tuple[Ordering, ...]
    sampled: bool  # True when orderings is a random subset of the distinct ones

    @property
    def n_total(self) -> int:
        return math.comb(self.n_sites, self.k)


def sublattice_permutations(atoms: Atoms, sites, labels=None, symprec: float = 1e-5
                            ) -> np.ndarray:
    """Permutations [|G|, len(sites)] of ``sites`` under the space group of ``atoms``.

    ``labels`` (one per atom; default the chemical symbols) type the sites for the
    symmetry search. Row g maps site i to site ``perm[g, i]`` (positions within
    ``sites``). Raises ValueError when an operation does not map the sites onto
    themselves (``sites`` is not a whole sublattice).
    """
    labels = np.asarray(atoms.get_chemical_symbols() if labels is None else labels)
    _, types = np.unique(labels, return_inverse=True)
    frac = atoms.get_scaled_positions(wrap=True)
    cell = (atoms.cell.array, frac, types + 1)
    sym = spglib.get_symmetry(cell, symprec=symprec)
    if sym is None:
        raise ValueError(f"spglib found no symmetry operations (symprec {symprec})")
    perms = compute_all_sg_permutations(frac, sym["rotations"], sym["translations"],
                                        atoms.cell.array.T, symprec, types)
    sites = np.asarray(sites, dtype=int)
    position = np.full(len(atoms), -1)
    position[sites] = np.arange(len(sites))
    out = position[perms[:, sites]]
    if (out < 0).any():
        raise ValueError("the given sites are not closed under the space group "
                         "(not a complete sublattice)")
    return out


def count_distinct(perms: np.ndarray, k: int) -> int:
    """Number of orbits of k-subsets under the permutation group ``perms`` (Burnside:
    the average over g of the k-subsets fixed by g, i.e. of the t^k coefficient of
    prod over the cycles c of g of (1 + t^len(c)))."""
    n = perms.shape[1]
    if not 0 <= k <= n:
        raise ValueError(f"k = {k}: expected 0 <= k <= {n}")
    total = 0
    for g in perms:
        poly = [1] + [0] * n
        for length in _cycle_lengths(g):
            poly = [poly[i] + (poly[i - length] if i >= length else 0) for i in range(n + 1)]
        total += poly[k]
    count, rest = divmod(total, len(perms))
    if rest:
        raise ValueError("permutations do not form a group (Burnside sum not divisible)")
    return count


def _cycle_lengths(perm) -> list[int]:
    seen = np.zeros(len(perm), dtype=bool)
    lengths = []
    for start in range(len(perm)):
        if seen[start]:
            continue
        length, i = 0, start
        while not seen[i]:
            seen[i] = True
            i = perm[i]
            length += 1
        lengths.append(length)
    return lengths


def orbit(perms: np.ndarray, sites) -> np.ndarray:
    """All distinct images of the ordering ``sites`` as sorted rows [orbit size, k],
    lexicographically sorted (row 0 is the canonical representative)."""
    images = np.sort(perms[:, np.asarray(sites, dtype=int)], axis=1)
    return np.unique(images, axis=0)


def enumerate_distinct(perms: np.ndarray, k: int) -> list[Ordering]:
    """Every symmetry-distinct ordering of k dopants, each with its multiplicity,
    in lexicographic order of the canonical representatives."""
    n = perms.shape[1]
    seen: set[tuple[int, ...]] = set()
    out = []
    for combo in itertools.combinations(range(n), k):  # lexicographic: first hit is canonical
        if combo in seen:
            continue
        images = orbit(perms, combo)
        seen.update(map(tuple, images.tolist()))
        out.append(Ordering(sites=combo, multiplicity=len(images)))
    return out


def sample_distinct(perms: np.ndarray, k: int, n_wanted: int, rng: np.random.Generator,
                    max_draws: int | None = None) -> list[Ordering]:
    """Up to ``n_wanted`` distinct orderings from uniform random k-subsets
    (``max_draws`` draws at most, default 100 * n_wanted), in order of discovery."""
    n = perms.shape[1]
    max_draws = max_draws or 100 * n_wanted
    found: dict[tuple[int, ...], int] = {}
    for _ in range(max_draws):
        if len(found) == n_wanted:
            break
        images = orbit(perms, np.sort(rng.choice(n, size=k, replace=False)))
        key = tuple(images[0].tolist())
        if key not in found:
            found[key] = len(images)
    return [Ordering(sites=s, multiplicity=m) for s, m in found.items()]


def system_permutations(system: System, symprec: float = 1e-5) -> np.ndarray:
    """Permutations of the substituted sites of ``system``'s supercell under the
    space group of its parent supercell (sites typed by sublattice label)."""
    parent = system.ordered_supercell(0.0)
    return sublattice_permutations(parent, system.sublattice_indices(parent),
                                   labels=parent.get_array("site_label"), symprec=symprec)


def orderings(perms: np.ndarray, k: int, max_configs: int = 100,
              rng: np.random.Generator | None = None) -> Enumeration:
    """Symmetry-distinct orderings of k dopants under ``perms``: all of them when
    there are at most ``max_configs``, else ``max_configs`` drawn with ``rng``."""
    n_distinct = count_distinct(perms, k)
    if n_distinct <= max_configs:
        found, sampled = enumerate_distinct(perms, k), False
    else:
        if rng is None:
            raise ValueError(f"k = {k}: {n_distinct} distinct orderings exceed max_configs = "
                             f"{max_configs}; random sampling needs a seeded rng")
        found, sampled = sample_distinct(perms, k, max_configs, rng), True
    return Enumeration(n_sites=perms.shape[1], k=k, n_operations=len(perms),
                       n_distinct=n_distinct, orderings=tuple(found), sampled=sampled)


def build(system: System, ordering: Ordering) -> Atoms:
    """The supercell of ``ordering`` at the Vegard lattice of its composition
    (``atoms.info['x']`` is the realised dopant fraction)."""
    n_sites = system.n_sublattice_sites
    atoms = system.ordered_supercell(len(ordering.sites) / n_sites)
    sites = system.sublattice_indices(atoms)
    return system.with_dopants(atoms, sites[list(ordering.sites)])
