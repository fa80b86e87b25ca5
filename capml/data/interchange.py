"""Interchange: VASP results and extxyz in, extxyz (mace's REF_ keys) out.

VASP: vasprun.xml or OUTCAR (any file name, gzip/bzip2/xz allowed), checked first by
``capml.data.vasp_run``: a truncated file, an SCF that used all NELM steps, a missing
final energy (and, when asked, an unconverged relaxation) is refused with the file and
the reason. Energy is ase's ``energy`` (VASP's sigma -> 0 energy), forces in eV/A,
stress in eV/A^3 with ASE's sign. A non-self-consistent run (ICHARG >= 10, e.g. a band
structure) gives its band gap only. The band gap and band edges come from the
eigenvalues and occupations of all spins and k-points (``capml.calculators.band_gap``:
0 with a ``metal`` note when levels are partly occupied); an OUTCAR takes them from a
vasprun.xml in the same folder when there is one, else the gap is unknown (NaN).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import read as ase_read
from ase.io import write as ase_write

from capml.calculators.band_gap import METAL_TOLERANCE, band_edges
from capml.data import vasp_run
from capml.data.structure_set import DataError, StructureSet
from capml.data.vasp_run import VaspRunRejected

log = logging.getLogger(__name__)

REF_PREFIX = "REF_"
VASP_NAMES = ("vasprun.xml", "vasprun.xml.gz", "OUTCAR", "OUTCAR.gz")


def find_vasp_output(path) -> Path:
    """The VASP output file of ``path`` (a file, or a run folder)."""
    path = Path(path)
    if path.is_dir():
        for name in VASP_NAMES:
            if (path / name).exists():
                return path / name
        raise FileNotFoundError(f"{path}: no {' or '.join(VASP_NAMES)} in this run folder")
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such VASP output")
    return path


def read_vasp(path, level: str = "vasp", require_relaxed: bool = False,
              metal_tolerance: float = METAL_TOLERANCE) -> Atoms:
    """Final structure of a finished VASP run with its labels in ``atoms.calc`` (energy,
    forces, stress; none for a non-self-consistent run) and ``atoms.info`` (``band_gap``
    eV, ``band_edges`` (a BandEdges), ``label_note``). Raises VaspRunRejected for a run
    that did not finish or converge (``require_relaxed``: also an unconverged
    relaxation), DataError for a file that is not VASP output. ``metal_tolerance``: see
    ``capml.calculators.band_gap``."""
    path = find_vasp_output(path)
    run = vasp_run.inspect(path)
    problems = run.problems(require_relaxed)
    if problems:
        raise VaspRunRejected(f"{path}: {'; '.join(problems)}")
    try:
        atoms = ase_read(path, index=-1, format=run.format)
    except Exception as err:  # ase raises many types for odd files
        raise DataError(f"{path}: ase cannot read this {run.format} file "
                        f"({type(err).__name__}: {err})") from err
    notes = []
    if not run.self_consistent:
        atoms.calc = None
        notes.append(f"non-self-consistent run (ICHARG = {run.icharg}): band gap only, "
                     "energy, forces and stress not taken")
    if run.relaxation_unconverged():
        notes.append(run.relaxation_unconverged())
    notes.append(_add_band_gap(atoms, run, path, metal_tolerance))
    atoms.info.update(level=level, source=str(path), label_status="ok",
                      label_note="; ".join(n for n in notes if n))
    return atoms


def _add_band_gap(atoms: Atoms, run: vasp_run.VaspRun, path: Path, tolerance: float) -> str:
    """Put the band gap (eV) and edges of ``run`` into ``atoms.info``; returns a note."""
    if run.eigenvalues is None and run.format == "vasp-out":
        siblings = [path.parent / n for n in VASP_NAMES[:2] if (path.parent / n).exists()]
        if not siblings:
            return "band gap unknown: an OUTCAR has no eigenvalues and no vasprun.xml is beside it"
        try:
            run = vasp_run.inspect(siblings[0])
        except DataError as err:
            return f"band gap unknown: {err}"
    if run.eigenvalues is None:
        return f"band gap unknown: no eigenvalues in {run.path}"
    try:
        edges = band_edges(run.eigenvalues, run.occupations, 1.0, run.kpoints, tolerance)
    except ValueError as err:
        return f"band gap unknown: {err}"
    atoms.info.update(band_gap=edges.gap_eV, band_edges=edges)
    return edges.describe()


def import_vasp(paths, level: str = "vasp", require_relaxed: bool = False,
                metal_tolerance: float = METAL_TOLERANCE) -> StructureSet:
    """StructureSet from VASP outputs (files or run folders), one row per run.

    A run that cannot give labels is a row with ``label_status = "failed: <file>:
    <reason>"`` and NaN labels, its structure the first one the file holds; a path with
    no structure at all (missing, not VASP output) is logged and left out. Raises
    DataError when no path gives a structure.
    """
    rows, skipped = [], []
    for p in paths:
        try:
            rows.append(read_vasp(p, level, require_relaxed, metal_tolerance))
        except (DataError, FileNotFoundError) as err:
            atoms = _first_structure(p)
            if atoms is None:
                skipped.append(str(err))
                log.warning("VASP import: %s (left out, no structure)", err)
                continue
            atoms.info.update(level=level, source=str(p), label_status=f"failed: {err}"[:1000])
            rows.append(atoms)
    if not rows:
        raise DataError("VASP import: no structure in any of the paths: " + "; ".join(skipped))
    return StructureSet.from_atoms(rows)


def _first_structure(path) -> Atoms | None:
    """The input structure of a run that gives no labels (no calculator), or None."""
    try:
        path = find_vasp_output(path)
        atoms = ase_read(path, index=0, format=vasp_run.detect_format(path))
    except Exception:  # any failure here means no structure
        return None
    atoms.calc = None
    return atoms


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
