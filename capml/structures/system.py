"""Parent cells, supercells, Vegard lattices and random substitutions of a solid solution.

A ``System`` is built from the ``system`` config group: the parent cell's sites
(fractional coordinates and species), the substituted sublattice, and the
end-member lattices. Nothing here knows about Ag3SBr_xI_(1-x) beyond that config.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.build import make_supercell


class SystemConfigError(ValueError):
    """Invalid system configuration or composition."""


@dataclass(frozen=True)
class System:
    name: str
    species: tuple[str, ...]  # parent-cell species, the host species on substituted sites
    frac: np.ndarray  # [n_sites, 3] fractional coordinates in the parent cell
    sublattice: str  # label of the substituted sublattice
    site_labels: tuple[str, ...]  # sublattice label per parent site
    host: str  # species at x = 0 on the sublattice
    dopant: str  # species at x = 1 on the sublattice
    cell_x0: np.ndarray  # [3,3] parent cell (A) of the x = 0 end member
    cell_x1: np.ndarray  # [3,3] parent cell (A) of the x = 1 end member
    supercell: np.ndarray  # [3,3] integer supercell matrix

    @classmethod
    def from_config(cls, cfg) -> System:
        """Build from a mapping with keys name, sites, substitution, end_members, supercell."""
        try:
            sites = list(cfg["sites"])
            sub = cfg["substitution"]
            ends = {float(e["x"]): e for e in cfg["end_members"]}
            sc = np.array(cfg["supercell"], dtype=int)
        except (KeyError, TypeError) as err:
            raise SystemConfigError(f"system config: missing or malformed key {err} "
                               "(expected name, sites, substitution, end_members, supercell)") from err
        if set(ends) != {0.0, 1.0}:
            raise SystemConfigError(f"system config 'end_members': expected entries with x = 0 and "
                               f"x = 1, got x = {sorted(ends)}")
        labels = tuple(str(s["label"]) for s in sites)
        if sub["site"] not in labels:
            raise SystemConfigError(f"system config 'substitution.site' = {sub['site']!r} is not a "
                               f"site label (have {sorted(set(labels))})")
        species = tuple(str(sub["host"]) if s["label"] == sub["site"] else str(s["species"])
                        for s in sites)
        if sc.shape == (3,):
            sc = np.diag(sc)
        if sc.shape != (3, 3) or round(abs(np.linalg.det(sc))) < 1:
            raise SystemConfigError(f"system config 'supercell': expected 3 integers or a 3x3 "
                               f"non-singular matrix, got {cfg['supercell']}")
        return cls(
            name=str(cfg["name"]),
            species=species,
            frac=np.array([s["frac"] for s in sites], dtype=float),
            sublattice=str(sub["site"]),
            site_labels=labels,
            host=str(sub["host"]),
            dopant=str(sub["dopant"]),
            cell_x0=_cell_of(ends[0.0]),
            cell_x1=_cell_of(ends[1.0]),
            supercell=sc,
        )

    # ------------------------------------------------------------- cells
    def lattice(self, x: float) -> np.ndarray:
        """Parent cell (A) at composition x by Vegard's law (linear in x)."""
        _check_x(x)
        return (1.0 - x) * self.cell_x0 + x * self.cell_x1

    def parent(self, x: float = 0.0, fill: str | None = None) -> Atoms:
        """Parent cell at the Vegard lattice of x, with every substituted site
        holding ``fill`` (default: host for x < 0.5, else dopant)."""
        fill = fill or (self.host if x < 0.5 else self.dopant)
        symbols = [fill if lab == self.sublattice else sp
                   for sp, lab in zip(self.species, self.site_labels)]
        atoms = Atoms(symbols, scaled_positions=self.frac, cell=self.lattice(x), pbc=True)
        atoms.set_array("site_label", np.array(self.site_labels, dtype=object).astype(str))
        return atoms

    def ordered_supercell(self, x: float) -> Atoms:
        """Supercell at the Vegard lattice of x with all substituted sites still host."""
        return make_supercell(self.parent(x, fill=self.host), self.supercell)

    def sublattice_indices(self, atoms: Atoms) -> np.ndarray:
        """Indices of the substituted sublattice in a cell built by this System."""
        return np.flatnonzero(atoms.get_array("site_label") == self.sublattice)

    def realisable(self, x: float) -> float:
        """``x`` if the supercell realises it exactly (k / n_sites), else SystemConfigError
        naming the two nearest realisable compositions."""
        _check_x(x)
        n = self.n_sublattice_sites
        k = float(x) * n
        if abs(k - round(k)) < 1e-6:
            return float(x)
        lo, hi = int(np.floor(k)), int(np.ceil(k))
        raise SystemConfigError(
            f"x = {x} is not realisable with the {n} {self.sublattice} sites of the supercell "
            f"(x = k/{n}): nearest x = {lo / n:g} ({lo}/{n}) and x = {hi / n:g} ({hi}/{n}); "
            "use one of them, or round_x=true to round to the nearest")

    def n_substituted(self, x: float) -> int:
        """Exact number of dopant sites for x in the supercell: round(x * n_sites)."""
        _check_x(x)
        n_sites = int(np.sum(np.array(self.site_labels) == self.sublattice)) * self.n_cells
        return round(x * n_sites)

    @property
    def n_cells(self) -> int:
        return round(abs(np.linalg.det(self.supercell)))

    @property
    def n_sublattice_sites(self) -> int:
        return int(np.sum(np.array(self.site_labels) == self.sublattice)) * self.n_cells

    def compositions(self) -> np.ndarray:
        """All compositions the supercell realises exactly: k / n_sites."""
        return np.arange(self.n_sublattice_sites + 1) / self.n_sublattice_sites

    def random_solid_solution(self, x: float, rng: np.random.Generator) -> Atoms:
        """Supercell with exactly round(x * n_sites) dopant sites drawn without
        replacement, at the Vegard lattice of the realised fraction k / n_sites
        (``atoms.info['x']``)."""
        k = self.n_substituted(x)
        atoms = self.ordered_supercell(k / self.n_sublattice_sites)
        sites = self.sublattice_indices(atoms)
        chosen = rng.choice(sites, size=k, replace=False)
        return self.with_dopants(atoms, chosen)

    def with_dopants(self, atoms: Atoms, dopant_indices) -> Atoms:
        """Copy of an ordered supercell with the dopant on ``dopant_indices``."""
        atoms = atoms.copy()
        sym = np.array(atoms.get_chemical_symbols(), dtype=object)
        sym[np.asarray(dopant_indices, dtype=int)] = self.dopant
        atoms.set_chemical_symbols(list(sym))
        atoms.info["x"] = len(dopant_indices) / len(self.sublattice_indices(atoms))
        return atoms


def _cell_of(entry) -> np.ndarray:
    if "cell" in entry and entry["cell"] is not None:
        cell = np.array(entry["cell"], dtype=float)
        if cell.shape != (3, 3):
            raise SystemConfigError(f"system config end member x={entry['x']}: 'cell' must be 3x3")
        return cell
    if "a" in entry:
        return float(entry["a"]) * np.eye(3)
    raise SystemConfigError(f"system config end member x={entry.get('x')}: give 'a' (cubic, A) "
                       "or a 3x3 'cell'")


def _check_x(x: float) -> None:
    if not 0.0 <= float(x) <= 1.0:
        raise SystemConfigError(f"composition x = {x}: expected 0 <= x <= 1")
