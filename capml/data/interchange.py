"""Interchange: VASP results and extxyz in, extxyz (mace's REF_ keys) out.

VASP: vasprun.xml or OUTCAR through ase. Energy is ase's ``energy`` (VASP's
sigma -> 0 energy), forces in eV/A, stress in eV/A^3 with ASE's sign, and the band
gap from the eigenvalues and occupations of all spins and k-points (vasprun.xml
only: ase does not read eigenvalues from OUTCAR, so the gap of an OUTCAR is taken
from a vasprun.xml in the same folder when there is one, else left unknown).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import read as ase_read
from ase.io import write as ase_write

from capml.calculators.band_gap import gap_from_eigenvalues
from capml.data.structure_set import DataError, StructureSet

REF_PREFIX = "REF_"


def vasp_band_gap(atoms: Atoms) -> float:
    """Gap (eV) from a VASP calculation read by ase; NaN when no eigenvalues were read."""
    calc = atoms.calc
    try:
        nk = len(calc.get_ibz_k_points())
        ns = calc.get_number_of_spins()
        eig = np.array([[calc.get_eigenvalues(k, s) for k in range(nk)] for s in range(ns)])
        occ = np.array([[calc.get_occupation_numbers(k, s) for k in range(nk)]
                        for s in range(ns)])
    except (TypeError, AttributeError, NotImplementedError, IndexError):
        return float("nan")
    return gap_from_eigenvalues(eig, occ)


def read_vasp(path, level: str = "vasp") -> Atoms:
    """Final structure of a VASP run with energy, forces, stress and band gap."""
    path = Path(path)
    if path.is_dir():
        for name in ("vasprun.xml", "OUTCAR"):
            if (path / name).exists():
                path = path / name
                break
        else:
            raise FileNotFoundError(f"{path}: no vasprun.xml or OUTCAR")
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such VASP output")
    try:
        atoms = ase_read(path, index=-1)
    except Exception as err:  # ase raises many types for truncated files
        raise DataError(f"{path}: cannot read VASP output ({type(err).__name__}: {err})") from err
    gap = vasp_band_gap(atoms)
    if np.isnan(gap) and path.name != "vasprun.xml" and (path.parent / "vasprun.xml").exists():
        gap = vasp_band_gap(ase_read(path.parent / "vasprun.xml", index=-1))
    if np.isfinite(gap):
        atoms.info["band_gap"] = gap
    atoms.info.update(level=level, source=str(path), label_status="ok")
    return atoms


def import_vasp(paths, level: str = "vasp") -> StructureSet:
    """StructureSet from VASP outputs (files or run folders)."""
    return StructureSet.from_atoms([read_vasp(p, level) for p in paths])


def read_extxyz(path, prefix: str = REF_PREFIX) -> StructureSet:
    """extxyz -> StructureSet; labels from ``<prefix>energy/forces/stress`` keys or a
    calculator block, the band gap from ``band_gap`` (or ``<prefix>band_gap``)."""
    frames = ase_read(path, index=":", format="extxyz")
    for a in frames:
        _ref_to_calc(a, prefix)
    return StructureSet.from_atoms(frames)


def write_extxyz(path, data: StructureSet, prefix: str = REF_PREFIX) -> Path:
    """Write ``data`` as extxyz with mace's reference keys (``REF_energy`` in eV,
    ``REF_forces`` eV/A, ``REF_stress`` eV/A^3 Voigt, ASE sign) and metadata in info."""
    from capml.data.store import atomic_path

    path = Path(path)
    frames = []
    for a in data.to_atoms():
        res = a.calc.results if a.calc is not None else {}
        a.calc = None
        if "energy" in res:
            a.info[f"{prefix}energy"] = res["energy"]
        if "forces" in res:
            a.arrays[f"{prefix}forces"] = np.asarray(res["forces"])
        if "stress" in res:
            a.info[f"{prefix}stress"] = np.asarray(res["stress"])
        frames.append(a)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        ase_write(tmp, frames, format="extxyz")
    return path


def _ref_to_calc(atoms: Atoms, prefix: str) -> None:
    from ase.calculators.singlepoint import SinglePointCalculator

    res = dict(atoms.calc.results) if atoms.calc is not None else {}
    if f"{prefix}energy" in atoms.info:
        res["energy"] = float(atoms.info.pop(f"{prefix}energy"))
    if f"{prefix}forces" in atoms.arrays:
        res["forces"] = atoms.arrays.pop(f"{prefix}forces")
    if f"{prefix}stress" in atoms.info:
        res["stress"] = np.asarray(atoms.info.pop(f"{prefix}stress"))
    if f"{prefix}band_gap" in atoms.info:
        atoms.info["band_gap"] = float(atoms.info.pop(f"{prefix}band_gap"))
    if res:
        atoms.calc = SinglePointCalculator(atoms, **res)
