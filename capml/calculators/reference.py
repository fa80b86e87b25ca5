"""Reference labelers: a level of theory that turns a structure into labels.

A ``Labeler`` wraps an ASE calculator factory, the properties it provides, and
fallback settings to retry with when the SCF does not converge. Labelers are
built from the ``calculator`` config group via ``hydra.utils.instantiate``
(inside worker processes, so the calculator itself is never pickled).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms
from ase.calculators.calculator import CalculationFailed, Calculator

from capml.calculators.band_gap import METAL_TOLERANCE, gap_from_electron_count
from capml.utils.config import plain

log = logging.getLogger(__name__)

PROPERTIES = ("energy", "forces", "stress", "band_gap")
# Settings that steer an SCF to its solution without changing the solution (beyond the
# convergence tolerance): a level may change them between runs on one data file.
SCF_CONTROLS = ("maxiter", "max_iterations", "convergence", "mixer", "mixer_damping",
                "eigensolver", "txt", "verbosity", "parallel")


class LabelingFailed(RuntimeError):
    """A calculation that failed or did not converge with every settings variant."""


@dataclass
class Labeler:
    level: str  # name of the level of theory recorded per structure, e.g. gfn2-xtb
    build: Callable[..., Calculator]  # build(**settings) -> ASE calculator
    settings: dict  # keyword arguments of ``build``
    properties: tuple[str, ...] = PROPERTIES
    fallbacks: list[dict] = field(default_factory=list)  # setting overrides tried in turn
    band_gap: Callable[[Calculator, Atoms], float] | None = None
    provenance: dict = field(default_factory=dict)  # e.g. generated PAW setups and their sha256
    scf_controls: tuple[str, ...] = SCF_CONTROLS  # settings that may change between runs

    def __post_init__(self):
        bad = set(self.properties) - set(PROPERTIES)
        if bad:
            raise ValueError(f"calculator '{self.level}': unknown properties {sorted(bad)} "
                             f"(expected a subset of {PROPERTIES})")
        if "band_gap" in self.properties and self.band_gap is None:
            raise ValueError(f"calculator '{self.level}' cannot compute band_gap")

    def calculator(self, **overrides) -> Calculator:
        """A fresh ASE calculator at this labeler's settings (``overrides`` replace some)."""
        if self.build is None:
            raise TypeError(f"calculator '{self.level}' ingests finished runs and has no "
                            "ASE calculator to build")
        return self.build(**{**self.settings, **overrides})

    def variant_names(self) -> list[str]:
        """Names of the settings variants, as failures record them: 'default', then each
        fallback's overrides."""
        return ["default"] + [str(f) for f in self.fallbacks]

    def __call__(self, atoms: Atoms, skip=()) -> tuple[dict, str]:
        """Labels of ``atoms`` and a note naming the fallback used ('' if none).

        Variants named in ``skip`` (see ``variant_names``) are not tried. Raises
        LabelingFailed when every variant tried fails.
        """
        errors, names = [], self.variant_names()
        for k, override in enumerate([{}] + list(self.fallbacks)):
            if names[k] in skip:
                continue
            try:
                labels = self._compute(atoms, override)
            except (CalculationFailed, RuntimeError, ValueError) as err:  # incl. LabelingFailed
                errors.append(f"{names[k]}: {str(err).splitlines()[0][:200]}")
                continue
            return labels, (f"fallback {k}: {override}" if k else "")
        raise LabelingFailed("; ".join(errors))

    def _compute(self, atoms: Atoms, overrides: dict) -> dict:
        atoms = atoms.copy()
        atoms.calc = self.calculator(**overrides)
        out = {}
        if "energy" in self.properties:
            out["energy"] = float(atoms.get_potential_energy())
        if "forces" in self.properties:
            out["forces"] = np.array(atoms.get_forces(), dtype=float)
        if "stress" in self.properties:
            out["stress"] = np.array(atoms.get_stress(voigt=True), dtype=float)
        if "band_gap" in self.properties:
            if not out:
                atoms.get_potential_energy()
            out["band_gap"] = float(self.band_gap(atoms.calc, atoms))
        for k, v in out.items():
            if not np.all(np.isfinite(v)):
                raise ValueError(f"non-finite {k} from {self.level}")
        return out


# ----------------------------------------------------------------- GFN2-xTB
def _tblite(annealing: dict | None = None, **settings):
    """tblite's ASE calculator. ``annealing`` = {start_temperature (K), hold_cycles, cycles}:
    the SCF starts with that Fermi smearing, holds it, then cools linearly to
    ``electronic_temperature``; convergence counts only after the cooling, so the labels
    belong to ``electronic_temperature``."""
    from ase.units import Hartree, kB
    from tblite.ase import TBLite

    if annealing is not None:
        settings["annealing"] = (float(annealing["start_temperature"]) * kB / Hartree,
                                 int(annealing["hold_cycles"]), int(annealing["cycles"]))
    return TBLite(**settings)


def _tblite_gap(calc, atoms) -> float:
    """HOMO-LUMO gap (eV) at Gamma from tblite's orbital energies (Hartree)."""
    from ase.units import Hartree

    res = calc._res  # tblite.ase keeps its Result object; orbital data is not in calc.results
    eps = np.asarray(res.get("orbital-energies")) * Hartree
    occ = np.asarray(res.get("orbital-occupations"))
    return gap_from_electron_count(eps, occ.sum())


def gfn2(properties=PROPERTIES, accuracy: float = 30.0, electronic_temperature: float = 300.0,
         max_iterations: int = 300, mixer_damping: float = 0.4, fallbacks=(),
         level: str = "gfn2-xtb") -> Labeler:
    """GFN2-xTB (tblite): energy, forces, stress and the Gamma-point HOMO-LUMO gap.

    ``electronic_temperature`` in K; fallbacks retry unconverged SCFs with other settings.
    """
    return Labeler(
        level=level,
        build=_tblite,
        settings={"method": "GFN2-xTB", "accuracy": accuracy,
                  "electronic_temperature": electronic_temperature,
                  "max_iterations": max_iterations, "mixer_damping": mixer_damping,
                  "verbosity": 0},
        properties=tuple(properties),
        fallbacks=[plain(f) for f in fallbacks],
        band_gap=_tblite_gap,
    )


# --------------------------------------------------------------------- GPAW
def _gpaw(**settings):
    from gpaw import GPAW

    return GPAW(**settings)


def _gpaw_gap(calc, atoms) -> float:
    from capml.calculators.gpaw_dft import _kohn_sham_gap

    return _kohn_sham_gap(calc, atoms)


def gpaw(properties=("band_gap",), mode: str = "lcao", basis: str = "sz(dzp)", xc: str = "PBE",
         kpts=(1, 1, 1), smearing_width: float = 0.01, max_iterations: int = 333,
         fallbacks=(), level: str = "gpaw-pbe-lcao") -> Labeler:
    """DFT with GPAW (default LCAO sz(dzp), PBE, Gamma point): band gap from the
    Kohn-Sham eigenvalues and occupations; energy/forces/stress when asked."""
    return Labeler(
        level=level,
        build=_gpaw,
        settings={"mode": mode, "basis": basis, "xc": xc, "kpts": tuple(kpts), "txt": None,
                  "occupations": {"name": "fermi-dirac", "width": smearing_width},
                  "maxiter": max_iterations},
        properties=tuple(properties),
        fallbacks=[plain(f) for f in fallbacks],
        band_gap=_gpaw_gap,
    )


# ------------------------------------------------------------ any ASE calculator
def _homo_lumo_gap(calc, atoms) -> float:
    homo, lumo = calc.get_homo_lumo()
    return float(lumo - homo)


def ase_calculator(calculator: Callable[[], Calculator], level: str,
                   properties=("energy", "forces", "stress")) -> Labeler:
    """Any ASE calculator (``calculator`` is a zero-argument factory, e.g. a
    Hydra ``_partial_`` of the calculator class). The band gap is available when the
    calculator implements ``get_homo_lumo``."""
    return Labeler(level=level, build=lambda: calculator(), settings={},
                   properties=tuple(properties), band_gap=_homo_lumo_gap)


# ------------------------------------------------------------ VASP ingestion
class VaspRunLabeler(Labeler):
    """Labels from finished VASP runs, one folder per structure named by its id.

    The folders are those written by ``simulate.py task=export_inputs`` (atoms sorted by
    species for VASP; ``capml.json`` holds the order back to the data set's). A
    missing run, an unfinished or unconverged one, a run whose input structure differs
    from the data set's, or a non-self-consistent run asked for energies is a recorded
    failure naming the file and the reason. The label note says how the gap was found
    (direct/indirect and the band-edge k-points, or metal).
    """

    def __init__(self, runs_dir: str, level: str, properties, tolerance: float = 1e-4,
                 metal_tolerance: float = METAL_TOLERANCE):
        self.runs_dir = runs_dir
        self.tolerance = tolerance  # A, input positions vs the data set's
        self.metal_tolerance = metal_tolerance
        super().__init__(level=level, build=None,
                         settings={"runs_dir": str(runs_dir), "metal_tolerance": metal_tolerance},
                         properties=tuple(properties), band_gap=lambda calc, atoms: 0.0)

    def __call__(self, atoms: Atoms, skip=()) -> tuple[dict, str]:
        from capml.data.structure_set import DataError

        try:
            run, inverse = self._read_run(atoms)
        except (DataError, FileNotFoundError) as err:
            raise LabelingFailed(str(err)) from err
        return self._labels(run, inverse), run.info["label_note"]

    def _read_run(self, atoms: Atoms) -> tuple[Atoms, np.ndarray]:
        """The run of ``atoms`` and the permutation from its atom order to the data set's."""
        import json
        from pathlib import Path

        from capml.data.interchange import read_vasp

        folder = Path(self.runs_dir) / str(atoms.info.get("id", ""))
        if not (folder / "capml.json").exists():
            raise LabelingFailed(f"no exported VASP run for id {atoms.info.get('id')!r} "
                                 f"in {self.runs_dir} (expected {folder}/capml.json)")
        order = np.array(json.loads((folder / "capml.json").read_text())["order"])
        run = read_vasp(folder, level=self.level, metal_tolerance=self.metal_tolerance)
        inverse = np.argsort(order)  # run[inverse] is in the data set's atom order
        if (len(run) != len(atoms) or (run.numbers[inverse] != atoms.numbers).any()
                or np.abs(run.positions[inverse] - atoms.positions).max() > self.tolerance):
            raise LabelingFailed(f"{run.info['source']}: VASP structure differs from data-set "
                                 f"structure {atoms.info.get('id')!r} (not a single point of it?)")
        return run, inverse

    def _labels(self, run: Atoms, inverse: np.ndarray) -> dict:
        source, res = run.info["source"], (run.calc.results if run.calc is not None else {})
        wanted = [p for p in ("energy", "forces", "stress") if p in self.properties]
        missing = [p for p in wanted if p not in res]
        if missing:
            raise LabelingFailed(f"{source}: no {', '.join(missing)} in this run "
                                 f"({run.info['label_note'] or 'not in the file'}); ingest it "
                                 "with properties: [band_gap]")
        out = {p: np.asarray(res[p], dtype=float) for p in wanted}
        if "forces" in out:
            out["forces"] = out["forces"][inverse]
        if "energy" in out:
            out["energy"] = float(out["energy"])
        if "band_gap" in self.properties:
            if "band_gap" not in run.info:
                raise LabelingFailed(f"{source}: {run.info['label_note']}")
            out["band_gap"] = float(run.info["band_gap"])
        return out


def vasp(runs_dir: str, level: str = "vasp-pbesol",
         properties=("energy", "forces", "stress", "band_gap"),
         metal_tolerance: float = METAL_TOLERANCE) -> Labeler:
    """Ingest finished VASP single points from ``runs_dir/<structure id>/``;
    ``metal_tolerance`` (fraction of full occupation) decides when a run is a metal."""
    return VaspRunLabeler(runs_dir=runs_dir, level=level, properties=properties,
                          metal_tolerance=metal_tolerance)
