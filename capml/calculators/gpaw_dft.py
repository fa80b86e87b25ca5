"""GPAW DFT levels of the demo: PBEsol plane waves (energy, forces, stress, gap) and
GLLB-SC (quasiparticle gap = Kohn-Sham gap + derivative discontinuity).

GPAW's data wheel ships no PBEsol PAW setups; ``ensure_setups`` generates them with GPAW's
own generator (``gpaw-setup``) into a cache folder named by the config, once, and the
labelers record what was generated (file names and sha256) beside their settings, so a data
file says exactly which setups made its labels.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.calculator import CalculationFailed
from ase.data import chemical_symbols

from capml.calculators.band_gap import BandEdges, band_edges
from capml.calculators.reference import Labeler
from capml.utils.config import plain

log = logging.getLogger(__name__)

SHIPPED_XC = ("LDA", "PBE", "RPBE", "revPBE", "GLLBSC")  # in the gpaw-data wheel
ISOLATED_BOX_A = (12.0, 12.5, 13.0)  # box of isolated-atom energies (E0s), A


def default_setups_dir() -> Path:
    """``$CAPML_GPAW_SETUPS`` or ``~/.cache/capml/gpaw-setups``."""
    return Path(os.environ.get("CAPML_GPAW_SETUPS",
                               Path.home() / ".cache" / "capml" / "gpaw-setups"))


def setup_file(symbol: str, xc: str, variant: str | None = None) -> str:
    """GPAW's name of a setup file: ``<symbol>[.<variant>].<xc>``."""
    return ".".join([symbol] + ([variant] if variant else []) + [xc])


_GENERATE = """
import sys
from gpaw.atom.configurations import parameters, parameters_extra
from gpaw.atom.generator import Generator
symbol, xc, variant = sys.argv[1], sys.argv[2], sys.argv[3] or None
table = parameters_extra if variant else parameters
p = dict(table[symbol])
if p.pop('name', None) != variant:
    sys.exit(f'gpaw has no setup variant {variant!r} of {symbol}')
Generator(symbol, xc, scalarrel=True, nofiles=True, txt="-").run(name=variant, **p)
"""


def ensure_setups(symbols, xc: str, setups_dir=None, variants=None) -> dict:
    """PAW setups of every symbol for functional ``xc``, generated with GPAW's own atomic
    generator (the parameters of ``gpaw-setup``; ``variants`` = {symbol: name} picks GPAW's
    alternative ones, e.g. {"Ag": "11"}: 4d10 5s1 valence, the 4s4p semicore frozen) into
    ``setups_dir`` where missing (seconds per element). That folder is put first on GPAW's
    setup path. Returns {file name: sha256} of the setups used from it ({} for functionals
    whose setups the gpaw-data wheel ships)."""
    import gpaw

    if xc in SHIPPED_XC:
        return {}
    variants = dict(variants or {})
    folder = Path(setups_dir) if setups_dir else default_setups_dir()
    names = {s: setup_file(s, xc, variants.get(s)) for s in sorted(set(symbols))}
    for symbol, name in names.items():
        if (folder / name).exists():
            continue
        folder.mkdir(parents=True, exist_ok=True)
        log.info("generating PAW setup %s in %s", name, folder)
        # The generator writes into its working directory: a private one keeps a killed
        # generation from leaving a half-written file under the final name.
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            done = subprocess.run([sys.executable, "-c", _GENERATE, symbol, xc,
                                   variants.get(symbol) or ""],
                                  cwd=tmp, capture_output=True, text=True)
            if done.returncode or not (Path(tmp) / name).exists():
                raise RuntimeError(f"generating the PAW setup {name} in {folder} failed:\n"
                                   f"{(done.stderr or done.stdout)[-2000:]}")
            os.replace(Path(tmp) / name, folder / name)
    if str(folder) not in map(str, gpaw.setup_paths):
        gpaw.setup_paths.insert(0, str(folder))
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
            for name in names.values()}


class GpawLabeler(Labeler):
    """A Labeler whose PAW setups are generated on first use; ``provenance`` records them."""

    def __init__(self, *, symbols, setups_dir, **kwargs):
        super().__init__(**kwargs)
        self.symbols, self.setups_dir = tuple(symbols), setups_dir
        self.provenance = {"gpaw": _gpaw_version(), "setups": ensure_setups(self.symbols, self.settings["xc"],
                                                   setups_dir, self.settings["setups"]),
                           "setups_dir": str(setups_dir or default_setups_dir())}

    def isolated_atom_energy(self, number: int, settings: dict | None = None) -> float:
        """Energy (eV) of one isolated atom at these settings (or ``settings``, e.g. the ones
        a data file recorded): spin polarised with Hund's-rule moment, in an orthorhombic
        box of ``ISOLATED_BOX_A`` (unequal edges: no artificial cubic degeneracy) at the
        Gamma point. The E0 of a MACE trained from scratch on this level."""
        if "energy" not in self.properties:
            raise ValueError(f"calculator '{self.level}' computes no energies")
        symbol = chemical_symbols[int(number)]
        settings = {"hund": True, **(settings or self.settings),
                    "kpts": {"size": (1, 1, 1), "gamma": True}}
        ensure_setups([symbol], settings["xc"], self.setups_dir, settings.get("setups"))
        atoms = Atoms(symbol, positions=[np.asarray(ISOLATED_BOX_A) / 2], cell=ISOLATED_BOX_A,
                      pbc=True)
        atoms.calc = self.build(**settings)
        return float(atoms.get_potential_energy())

    def _compute(self, atoms: Atoms, settings: dict) -> dict:
        from gpaw import ConvergenceError

        unknown = set(atoms.get_chemical_symbols()) - set(self.symbols)
        if unknown:
            ensure_setups(unknown, settings["xc"], self.setups_dir, settings["setups"])
        try:
            return super()._compute(atoms, settings)
        except ConvergenceError as err:  # not a RuntimeError: name it a failed calculation,
            # so that the fallbacks are tried
            raise CalculationFailed(f"{type(err).__name__}: {err}") from err


def _gpaw_version() -> str:
    import gpaw

    return gpaw.__version__


def kohn_sham_edges(calc) -> BandEdges:
    """Band edges of a converged GPAW calculation over all spins and irreducible k-points
    (``capml.calculators.band_gap.band_edges``: a smeared metal gets gap 0, not a false gap).
    GPAW's occupation numbers carry the k-point weight; dividing it out makes a level's
    occupation comparable between k-points (else a low-weight k-point's filled levels look
    empty)."""
    n_spins = calc.get_number_of_spins()
    weights = np.asarray(calc.get_k_point_weights())
    eigs = [[calc.get_eigenvalues(kpt=k, spin=s) for k in range(len(weights))]
            for s in range(n_spins)]
    occs = [[np.asarray(calc.get_occupation_numbers(kpt=k, spin=s)) / w
             for k, w in enumerate(weights)] for s in range(n_spins)]
    return band_edges(np.array(eigs), np.array(occs), full_occupation=2.0 / n_spins,
                      kpoints=calc.get_ibz_k_points())


def _kohn_sham_gap(calc, atoms) -> float:
    return kohn_sham_edges(calc).gap_eV


def _kpts(kpts, gamma: bool) -> dict:
    return {"size": tuple(int(k) for k in kpts), "gamma": bool(gamma)}


def _variants(setups) -> dict:
    return {str(k): str(v) for k, v in dict(setups or {}).items()}


# ------------------------------------------------------------------ PBEsol, plane waves
def _pw_calculator(*, ecut, **settings):
    from gpaw import GPAW, PW

    return GPAW(mode=PW(ecut), **settings)


def pbesol(properties=("energy", "forces", "stress", "band_gap"), ecut: float = 400.0,
           kpts=(1, 1, 1), gamma: bool = True, xc: str = "PBEsol", setups=None,
           smearing_width: float = 0.01, max_iterations: int = 300, convergence=None,
           fallbacks=(), symbols=("Ag", "S", "Br", "I"), setups_dir=None,
           level: str = "gpaw-pbesol-pw") -> GpawLabeler:
    """Plane-wave DFT (``ecut`` eV; ``kpts`` grid of the cell, Gamma-centred when
    ``gamma``), PBEsol by default: energy, forces, stress and the Kohn-Sham gap; Fermi-Dirac
    smearing ``smearing_width`` eV. ``setups`` = {symbol: GPAW setup variant}; the PAW
    setups of ``symbols`` are generated into ``setups_dir`` (see ``ensure_setups``);
    ``convergence`` overrides GPAW's SCF criteria (e.g. {"energy": 1e-6, "forces": 1e-4})."""
    return GpawLabeler(
        level=level, build=_pw_calculator, symbols=symbols, setups_dir=setups_dir,
        settings=dict(ecut=float(ecut), xc=xc, kpts=_kpts(kpts, gamma),
                      setups=_variants(setups), txt=None,
                      occupations={"name": "fermi-dirac", "width": float(smearing_width)},
                      maxiter=int(max_iterations),
                      **({"convergence": plain(convergence)} if convergence else {})),
        properties=tuple(properties), fallbacks=[plain(f) for f in fallbacks],
        band_gap=_kohn_sham_gap)


# ------------------------------------------------------------------------- GLLB-SC
def _gllbsc_calculator(**settings):
    # The response potential's discontinuity lives in the original GPAW interface.
    from gpaw.calculator import GPAW

    return GPAW(**settings)


def quasiparticle_gap(calc, atoms) -> tuple[float, float]:
    """(Kohn-Sham gap, derivative discontinuity) in eV of a converged GLLB-SC calculation:
    the quasiparticle gap is their sum (Kuisma et al., PRB 82, 115106 (2010))."""
    homo, lumo = calc.get_homo_lumo()
    response = calc.hamiltonian.xc.response
    potential = response.calculate_discontinuity_potential(homo, lumo)
    ks_gap, discontinuity = response.calculate_discontinuity(potential)
    return float(ks_gap), float(discontinuity)


def _gllbsc_gap(calc, atoms) -> float:
    return float(sum(quasiparticle_gap(calc, atoms)))


def gllbsc(properties=("band_gap",), mode: str = "pw", ecut: float = 400.0,
           basis: str = "dzp", kpts=(1, 1, 1), gamma: bool = True, setups=None,
           smearing_width: float = 0.01, max_iterations: int = 300, convergence=None,
           fallbacks=(), symbols=("Ag", "S", "Br", "I"), setups_dir=None,
           level: str = "gpaw-gllbsc-pw") -> GpawLabeler:
    """GLLB-SC (a band-gap-accurate potential at semilocal cost): the quasiparticle gap
    = Kohn-Sham gap + derivative discontinuity; plane waves (``ecut`` eV) by default, or
    ``mode="lcao"`` with ``basis``; ``convergence`` overrides GPAW's SCF criteria."""
    if set(properties) != {"band_gap"}:
        raise ValueError(f"calculator '{level}': GLLB-SC gives band_gap only "
                         f"(its total energy is not a variational one), got {list(properties)}")
    if mode not in ("pw", "lcao"):
        raise ValueError(f"calculator '{level}': mode={mode!r}, expected 'pw' or 'lcao'")
    basis_settings = ({"mode": {"name": "pw", "ecut": float(ecut)}} if mode == "pw"
                      else {"mode": "lcao", "basis": basis})
    return GpawLabeler(
        level=level, build=_gllbsc_calculator, symbols=symbols, setups_dir=setups_dir,
        settings=dict(**basis_settings, xc="GLLBSC", kpts=_kpts(kpts, gamma),
                      setups=_variants(setups), txt=None,
                      occupations={"name": "fermi-dirac", "width": float(smearing_width)},
                      maxiter=int(max_iterations),
                      **({"convergence": plain(convergence)} if convergence else {})),
        properties=("band_gap",), fallbacks=[plain(f) for f in fallbacks],
        band_gap=_gllbsc_gap)
