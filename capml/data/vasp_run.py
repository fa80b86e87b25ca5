"""What a VASP output file says about its run: finished or not, SCF converged or not,
self-consistent or not, and its eigenvalues. Pure checks on the file, before any label
is taken from it.

The format is decided from the content, never from the file name (a vasprun.xml named
``run_hse.xml`` is still one); ``.gz``, ``.bz2`` and ``.xz`` files are read decompressed.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase.io.formats import open_with_compression

from capml.data.structure_set import DataError

NON_SELF_CONSISTENT = 10  # ICHARG >= 10: the density is read and kept fixed
RELAXING_IBRION = (1, 2, 3)  # ionic relaxation algorithms
OUTCAR_FINISHED = "General timing and accounting"  # VASP's last block, written at exit


class VaspRunRejected(DataError):
    """A VASP output that must not give labels: unfinished, unconverged, truncated."""


@dataclass
class VaspRun:
    """Facts about one VASP run read from its output file."""

    path: Path
    format: str  # ase format name: vasp-xml or vasp-out
    icharg: int
    nelm: int  # maximum SCF steps per ionic step
    scf_steps: list[int]  # SCF steps done in each ionic step
    nsw: int
    ibrion: int
    ediffg: float  # eV/A when negative (force criterion), else eV
    has_final_energy: bool
    final_forces: np.ndarray | None = None  # eV/A, [n, 3]
    eigenvalues: np.ndarray | None = None  # eV, [spin, k, band]
    occupations: np.ndarray | None = None  # per spin channel, 0..1
    kpoints: np.ndarray | None = None  # fractional reciprocal coordinates, [k, 3]
    notes: list[str] = field(default_factory=list)

    @property
    def self_consistent(self) -> bool:
        return self.icharg < NON_SELF_CONSISTENT

    def problems(self, require_relaxed: bool = False) -> list[str]:
        """Reasons not to take labels from this run (empty: fine)."""
        out = []
        if not self.scf_steps:
            out.append("no ionic step finished")
        elif self.scf_steps[-1] >= self.nelm:  # also for fixed-density runs: their
            # eigenvalues converge iteratively too
            kind = "SCF" if self.self_consistent else "non-self-consistent diagonalisation"
            out.append(f"{kind} not converged: the last ionic step used all NELM = {self.nelm} "
                       "electronic steps")
        if self.self_consistent and not self.has_final_energy:
            out.append("no final energy")
        if require_relaxed and self.relaxation_unconverged():
            out.append(self.relaxation_unconverged())
        return out

    def relaxation_unconverged(self) -> str:
        """Why a relaxation did not reach EDIFFG ('' when it did, or is not one)."""
        if self.ibrion not in RELAXING_IBRION or self.nsw <= 0 or len(self.scf_steps) < self.nsw:
            return ""
        if self.ediffg < 0 and self.final_forces is not None:
            fmax = float(np.linalg.norm(self.final_forces, axis=1).max())
            if fmax <= -self.ediffg:
                return ""
            return (f"relaxation not converged: stopped at NSW = {self.nsw} ionic steps with "
                    f"max force {fmax:.3f} eV/A > |EDIFFG| = {-self.ediffg:g} eV/A")
        return f"relaxation not converged: stopped at NSW = {self.nsw} ionic steps"


def detect_format(path: Path) -> str:
    """ase format of a VASP output, from its first bytes."""
    try:
        with open_with_compression(str(path), "rb") as fh:
            head = fh.read(4096).decode("utf-8", "replace")
    except (OSError, EOFError, ValueError) as err:
        raise DataError(f"{path}: cannot open ({type(err).__name__}: {err})") from err
    if "<modeling" in head:
        return "vasp-xml"
    if head.lstrip().startswith("<"):
        root = re.search(r"<([A-Za-z_][\w.-]*)", head.lstrip().removeprefix("<?xml"))
        raise DataError(f"{path}: an XML file but not a VASP vasprun.xml (root element "
                        f"<{root.group(1) if root else '?'}>, expected <modeling>)")
    if re.match(r"\s*vasp\.\d", head):
        return "vasp-out"
    raise DataError(f"{path}: neither a vasprun.xml nor an OUTCAR (first line "
                    f"{head.splitlines()[0][:60] if head else '(empty file)'!r})")


def inspect(path) -> VaspRun:
    """The run behind a vasprun.xml or OUTCAR (possibly compressed)."""
    path = Path(path)
    fmt = detect_format(path)
    return _inspect_vasprun(path) if fmt == "vasp-xml" else _inspect_outcar(path)


def _inspect_vasprun(path: Path) -> VaspRun:
    try:
        with open_with_compression(str(path), "rb") as fh:
            root = ET.parse(fh).getroot()
    except ET.ParseError as err:
        raise VaspRunRejected(f"{path}: truncated or corrupt vasprun.xml ({err}): the run did not "
                        "finish (VASP writes the closing tags at exit)") from err
    params = _parameters(root)
    calcs = root.findall("calculation")
    last = calcs[-1] if calcs else None
    forces = last.find("varray[@name='forces']") if last is not None else None
    energy = last.find("energy") if last is not None else None
    run = VaspRun(
        path=path, format="vasp-xml", icharg=int(params.get("ICHARG", 2)),
        nelm=int(params.get("NELM", 60)), scf_steps=[len(c.findall("scstep")) for c in calcs],
        nsw=int(params.get("NSW", 0)), ibrion=int(params.get("IBRION", -1)),
        ediffg=float(params.get("EDIFFG", -1e9)),
        has_final_energy=energy is not None and energy.find("i[@name='e_0_energy']") is not None,
        final_forces=_varray(forces))
    if last is not None and last.find("eigenvalues") is not None:
        run.eigenvalues, run.occupations = _eigenvalues(last.find("eigenvalues"))
        run.kpoints = _varray(root.find("kpoints/varray[@name='kpointlist']"))
    return run


def _parameters(root) -> dict[str, str]:
    """INCAR-level parameters, the first occurrence of each name (the response-function
    section repeats NELM with another meaning)."""
    out: dict[str, str] = {}
    block = root.find("parameters")
    for item in (block.iter() if block is not None else ()):
        if item.tag in ("i", "v") and item.get("name"):
            out.setdefault(item.get("name").strip(), (item.text or "").strip())
    return out


def _varray(node) -> np.ndarray | None:
    if node is None:
        return None
    return np.array([[float(v) for v in row.text.split()] for row in node.findall("v")])


def _eigenvalues(node) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (eV) and occupations, [spin, k, band]."""
    spins = node.find("array/set").findall("set")
    rows = np.array([[[[float(v) for v in r.text.split()[:2]] for r in kset.findall("r")]
                      for kset in spin.findall("set")] for spin in spins])
    return rows[..., 0], rows[..., 1]


def _inspect_outcar(path: Path) -> VaspRun:
    with open_with_compression(str(path), "r") as fh:
        text = fh.read()

    def number(key, default, cast=float):
        match = re.search(rf"^\s*{key}\s*=\s*([-+.\dEe]+)", text, re.MULTILINE)
        return cast(float(match.group(1))) if match else default

    steps: dict[int, int] = {}
    for ionic, electronic in re.findall(r"Iteration\s+(\d+)\(\s*(\d+)\)", text):
        steps[int(ionic)] = max(steps.get(int(ionic), 0), int(electronic))
    run = VaspRun(path=path, format="vasp-out", icharg=number("ICHARG", 2, int),
                  nelm=number("NELM", 60, int), scf_steps=[steps[k] for k in sorted(steps)],
                  nsw=number("NSW", 0, int), ibrion=number("IBRION", -1, int),
                  ediffg=number("EDIFFG", -1e9), has_final_energy="energy(sigma->0)" in text)
    if OUTCAR_FINISHED not in text:
        raise VaspRunRejected(f"{path}: OUTCAR without VASP's closing timing block: the run did not "
                        "finish (killed, crashed or still running)")
    return run
