"""Displaced structures for reference calculations.

- thermal: phonopy's random displacements at temperature T (paper Eq. 1):
  a superposition of harmonic normal modes with Bose-Einstein amplitudes
  (zero-point motion included), imaginary modes taken at |omega|.
- uniform: every Cartesian component drawn from U(-A, A).
- equilibrium: the undistorted cell.

For a solid solution the supercell force constants are those of the end members,
mixed linearly in x (a virtual-crystal approximation for the force constants), while
the masses are those of the actual species on every site.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from phonopy import Phonopy

from capml.simulation.phonopy_io import (
    full_force_constants,
    map_atoms,
    supercell_atoms,
    to_phonopy_atoms,
)


def supercell_force_constants(end_members: dict[float, Phonopy], target: Atoms,
                              x: float) -> np.ndarray:
    """Force constants [n, n, 3, 3] (eV/A^2) for ``target`` (a supercell of the
    parent lattice, any species on the substituted sites): the end members' supercell
    force constants, mapped onto ``target``'s atom order and mixed linearly in x."""
    fc = None
    weights = {0.0: 1.0 - x, 1.0: x}
    for xe, ph in end_members.items():
        w = weights[float(xe)]
        if w == 0.0:
            continue
        ref = supercell_atoms(ph)
        if len(ref) != len(target):
            raise ValueError(f"force constants of end member x={xe} are for a {len(ref)}-atom "
                             f"supercell, the structure has {len(target)} atoms")
        scaled = target.copy()
        scaled.set_cell(ref.cell, scale_atoms=True)
        m = map_atoms(ref, scaled)
        fce = full_force_constants(ph)[np.ix_(m, m)]
        fc = w * fce if fc is None else fc + w * fce
    return fc


def harmonic_phonopy(atoms: Atoms, force_constants: np.ndarray) -> Phonopy:
    """Phonopy object treating ``atoms`` as its own (Gamma-only) supercell.

    Symmetry is off: random displacements need none, and the search dominates the
    cost for a disordered 40-atom cell."""
    ph = Phonopy(to_phonopy_atoms(atoms), supercell_matrix=np.eye(3, dtype=int),
                 primitive_matrix=np.eye(3), is_symmetry=False)
    ph.force_constants = force_constants
    return ph


def thermal(atoms: Atoms, force_constants: np.ndarray, temperature: float, seed: int,
            n_samples: int = 1, cutoff_frequency: float | None = None) -> list[Atoms]:
    """``n_samples`` thermally displaced copies of ``atoms`` at ``temperature`` (K).

    Displacements sample the harmonic canonical distribution of the modes
    commensurate with the cell (quantum Bose-Einstein amplitudes). Modes with
    |omega| < ``cutoff_frequency`` (THz) are not displaced: the harmonic amplitude
    diverges as 1/omega for soft and weakly imaginary modes, while the real
    (anharmonic) amplitude stays bounded.
    """
    if temperature < 0:
        raise ValueError(f"temperature {temperature} K: expected >= 0")
    ph = harmonic_phonopy(atoms, force_constants)
    ph.generate_displacements(number_of_snapshots=n_samples, random_seed=int(seed) % 2**31,
                              temperature=float(temperature),
                              cutoff_frequency=cutoff_frequency)
    out = []
    for disp in ph.displacements:
        new = atoms.copy()
        new.positions = atoms.positions + disp
        out.append(new)
    return out


def uniform(atoms: Atoms, amplitude: float, rng: np.random.Generator) -> Atoms:
    """Copy of ``atoms`` with every Cartesian component displaced by U(-A, A), A in A."""
    if amplitude < 0:
        raise ValueError(f"amplitude {amplitude} A: expected >= 0")
    new = atoms.copy()
    new.positions = atoms.positions + rng.uniform(-amplitude, amplitude, size=(len(atoms), 3))
    return new
