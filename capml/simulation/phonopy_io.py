"""Thin glue between ase and phonopy: conversion, construction, loading and saving
(force constants are computed by ``capml.simulation.phonons.force_constants``).

Masses are passed explicitly from ASE so that phonopy, MD and normal-mode
projections use one mass table.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
from ase import Atoms
from phonopy import Phonopy
from phonopy.structure.atoms import PhonopyAtoms
from phonopy.structure.cells import PrimitiveMatrixAutoDefaultWarning

log = logging.getLogger(__name__)


def to_phonopy_atoms(atoms: Atoms) -> PhonopyAtoms:
    return PhonopyAtoms(symbols=atoms.get_chemical_symbols(), cell=atoms.cell.array,
                        scaled_positions=atoms.get_scaled_positions(wrap=False),
                        masses=atoms.get_masses())


def to_ase_atoms(patoms: PhonopyAtoms) -> Atoms:
    atoms = Atoms(symbols=patoms.symbols, cell=patoms.cell,
                  scaled_positions=patoms.scaled_positions, pbc=True)
    atoms.set_masses(patoms.masses)
    return atoms


def make_phonopy(unitcell: Atoms, supercell_matrix, primitive_matrix="auto",
                 symprec: float = 1e-5) -> Phonopy:
    """Phonopy object for ``unitcell`` (ase) with ASE masses; ``supercell_matrix`` a
    3x3 matrix or its diagonal, ``symprec`` (A) phonopy's symmetry tolerance."""
    sc = np.array(supercell_matrix, dtype=int)
    if sc.shape == (3,):
        sc = np.diag(sc)
    with warnings.catch_warnings():
        # phonopy 4 warns that 'auto' differs from v3's identity default; capml asks for it
        warnings.simplefilter("ignore", PrimitiveMatrixAutoDefaultWarning)
        return Phonopy(to_phonopy_atoms(unitcell), supercell_matrix=sc,
                       primitive_matrix=primitive_matrix, symprec=symprec)


def load_phonopy(path, unitcell_file=None, supercell_matrix=None,
                 primitive_matrix="auto") -> Phonopy:
    """Load force constants from a phonopy yaml (with force constants or forces),
    or from FORCE_CONSTANTS / FORCE_SETS plus a unit-cell file (any ase format)."""
    import phonopy
    from phonopy.file_IO import parse_FORCE_CONSTANTS, parse_FORCE_SETS

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such force-constants file")
    if path.suffix in (".yaml", ".yml"):
        ph = phonopy.load(str(path), produce_fc=True, log_level=0)
    else:
        if unitcell_file is None or supercell_matrix is None:
            raise ValueError(f"{path}: FORCE_CONSTANTS/FORCE_SETS need 'unitcell_file' "
                             "and 'supercell_matrix'")
        from ase.io import read

        ph = make_phonopy(read(unitcell_file), supercell_matrix, primitive_matrix)
        if path.name.startswith("FORCE_SETS"):
            ph.dataset = parse_FORCE_SETS(filename=str(path))
            ph.produce_force_constants()
        else:
            ph.force_constants = parse_FORCE_CONSTANTS(filename=str(path))
    if ph.force_constants is None:
        raise ValueError(f"{path}: holds neither force constants nor forces")
    return ph


def save_phonopy(phonon: Phonopy, path) -> Path:
    """Write phonopy yaml with force constants (atomically)."""
    from capml.data.store import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        phonon.save(filename=str(tmp), settings={"force_constants": True})
    return path


def full_force_constants(phonon: Phonopy) -> np.ndarray:
    """Supercell force constants [n, n, 3, 3] (eV/A^2), expanded when stored compact."""
    from phonopy.harmonic.force_constants import compact_fc_to_full_fc

    fc = phonon.force_constants
    return fc if fc.shape[0] == fc.shape[1] else compact_fc_to_full_fc(phonon.primitive, fc)


def supercell_atoms(phonon: Phonopy) -> Atoms:
    return to_ase_atoms(phonon.supercell)


def map_atoms(reference: Atoms, target: Atoms, tol: float = 1e-3) -> np.ndarray:
    """Index array ``m`` with target[i] at the position of reference[m[i]]
    (same cell shape; fractional coordinates compared modulo 1).

    Raises ValueError when the two cells do not hold the same sites.
    """
    if len(reference) != len(target):
        raise ValueError(f"cannot map {len(target)} atoms onto {len(reference)}")
    fr = reference.get_scaled_positions(wrap=True)
    ft = target.get_scaled_positions(wrap=True)
    d = ft[:, None, :] - fr[None, :, :]
    d -= np.round(d)
    dist = np.linalg.norm(d @ target.cell.array, axis=-1)
    m = dist.argmin(axis=1)
    if dist[np.arange(len(m)), m].max() > tol or len(set(m.tolist())) != len(m):
        raise ValueError("atoms do not map one-to-one (different supercells?)")
    return m
