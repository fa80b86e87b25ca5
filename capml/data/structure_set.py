"""In-memory ragged container for many structures, their labels and metadata.

``StructureSet`` is what the HDF5 store reads and writes; it converts to and
from lists of ``ase.Atoms``. Pure data, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator

from capml.data.schema import LABEL_ARRAYS, META_COLUMNS

# 1 A/fs expressed in ase's velocity unit.
_ASE_VELOCITY_PER_A_FS = 1.0 / units.fs


class DataError(ValueError):
    """Invalid structure data; the message names the file/key and what was expected."""


@dataclass
class StructureSet:
    n_atoms: np.ndarray  # [N] int
    numbers: np.ndarray  # [sum n] int
    positions: np.ndarray  # [sum n, 3] A
    cell: np.ndarray  # [N, 3, 3] A
    pbc: np.ndarray  # [N, 3] bool
    labels: dict[str, np.ndarray] = field(default_factory=dict)  # LABEL_ARRAYS subset
    meta: dict[str, np.ndarray] = field(default_factory=dict)  # per-structure columns

    def __len__(self) -> int:
        return len(self.n_atoms)

    @property
    def offsets(self) -> np.ndarray:
        """Start index of each structure in the per-atom arrays ([N+1])."""
        return np.concatenate([[0], np.cumsum(self.n_atoms)]).astype(np.int64)

    def atom_index(self, indices) -> np.ndarray:
        """Per-atom row indices belonging to the given structure indices, in order."""
        off = self.offsets
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size == 0:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([np.arange(off[i], off[i + 1]) for i in idx])

    def subset(self, indices) -> StructureSet:
        """A new set with the structures at ``indices`` (order kept, copies)."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        rows = self.atom_index(idx)
        labels = {
            k: (v[rows] if LABEL_ARRAYS[k][0] == "atom" else v[idx]) for k, v in self.labels.items()
        }
        return StructureSet(
            n_atoms=self.n_atoms[idx].copy(),
            numbers=self.numbers[rows].copy(),
            positions=self.positions[rows].copy(),
            cell=self.cell[idx].copy(),
            pbc=self.pbc[idx].copy(),
            labels=labels,
            meta={k: v[idx].copy() for k, v in self.meta.items()},
        )

    def select(self, **criteria) -> StructureSet:
        """Structures whose metadata match all criteria.

        A criterion is a value (equality; floats compared with tolerance 1e-9)
        or a list/tuple of accepted values. Example: ``select(method="phonon", x=[0, 1])``.
        """
        mask = np.ones(len(self), dtype=bool)
        for key, wanted in criteria.items():
            if key not in self.meta:
                raise DataError(f"cannot select on '{key}': no such metadata column "
                                f"(have {sorted(self.meta)})")
            col = self.meta[key]
            values = wanted if isinstance(wanted, (list, tuple, np.ndarray)) else [wanted]
            hit = np.zeros(len(self), dtype=bool)
            for v in values:
                if col.dtype.kind == "f":
                    hit |= np.isclose(col, float(v), rtol=0, atol=1e-9)
                else:
                    hit |= col == v
            mask &= hit
        return self.subset(np.flatnonzero(mask))

    def has_label(self, name: str) -> np.ndarray:
        """[N] bool: which structures carry a finite value of label ``name``."""
        if name not in self.labels:
            return np.zeros(len(self), dtype=bool)
        v = self.labels[name]
        if LABEL_ARRAYS[name][0] == "structure":
            return np.isfinite(v.reshape(len(self), -1)).all(axis=1)
        ok = np.isfinite(v).all(axis=1)
        off = self.offsets
        return np.array([ok[off[i]:off[i + 1]].all() for i in range(len(self))], dtype=bool)

    # ------------------------------------------------------------------ ase
    @classmethod
    def from_atoms(cls, atoms_list, meta: dict | None = None) -> StructureSet:
        """Build from ase.Atoms; labels come from attached calculators and
        ``atoms.info['band_gap']``, metadata from ``atoms.info`` unless given."""
        atoms_list = list(atoms_list)
        n = np.array([len(a) for a in atoms_list], dtype=np.int64)
        numbers = np.concatenate([a.numbers for a in atoms_list]) if atoms_list else np.zeros(0, int)
        positions = (np.concatenate([a.positions for a in atoms_list])
                     if atoms_list else np.zeros((0, 3)))
        labels = _labels_from_atoms(atoms_list, n)
        if meta is None:
            meta = {}
            for key in META_COLUMNS:
                if any(key in a.info for a in atoms_list):
                    meta[key] = [a.info.get(key, META_COLUMNS[key][1]) for a in atoms_list]
        return cls(
            n_atoms=n,
            numbers=numbers.astype(np.int64),
            positions=positions.astype(np.float64),
            cell=np.array([a.cell.array for a in atoms_list], dtype=np.float64).reshape(-1, 3, 3),
            pbc=np.array([a.pbc for a in atoms_list], dtype=bool).reshape(-1, 3),
            labels=labels,
            meta=normalise_meta(meta, len(atoms_list)),
        )

    def to_atoms(self) -> list[Atoms]:
        """Structures as ase.Atoms; labels on a SinglePointCalculator, the band
        gap and metadata in ``atoms.info``."""
        out = []
        off = self.offsets
        for i in range(len(self)):
            s = slice(off[i], off[i + 1])
            atoms = Atoms(numbers=self.numbers[s], positions=self.positions[s],
                          cell=self.cell[i], pbc=self.pbc[i])
            results = {}
            for name, arr in self.labels.items():
                kind = LABEL_ARRAYS[name][0]
                val = arr[s] if kind == "atom" else arr[i]
                if not np.all(np.isfinite(val)):
                    continue
                if name == "band_gap":
                    atoms.info["band_gap"] = float(val)
                elif name == "velocities":
                    atoms.set_velocities(val * _ASE_VELOCITY_PER_A_FS)
                else:
                    results[name] = float(val) if name == "energy" else val.copy()
            if results:
                atoms.calc = SinglePointCalculator(atoms, **results)
            for key, col in self.meta.items():
                atoms.info[key] = col[i].item() if hasattr(col[i], "item") else col[i]
            out.append(atoms)
        return out


def concat(sets: list[StructureSet]) -> StructureSet:
    """Concatenate sets; labels/metadata missing in some sets are filled as unknown."""
    sets = [s for s in sets if len(s)]
    if not sets:
        raise DataError("concat: no structures")
    label_keys = sorted(set().union(*(s.labels for s in sets)))
    meta_keys = sorted(set().union(*(s.meta for s in sets)))
    labels = {}
    for k in label_keys:
        parts = []
        for s in sets:
            if k in s.labels:
                parts.append(s.labels[k])
            else:
                rows = s.n_atoms.sum() if LABEL_ARRAYS[k][0] == "atom" else len(s)
                parts.append(np.full((rows,) + LABEL_ARRAYS[k][1], np.nan))
        labels[k] = np.concatenate(parts)
    meta = {}
    for k in meta_keys:
        parts = [s.meta[k] if k in s.meta else normalise_meta({k: [None] * len(s)}, len(s))[k]
                 for s in sets]
        meta[k] = np.concatenate(parts)
    return StructureSet(
        n_atoms=np.concatenate([s.n_atoms for s in sets]),
        numbers=np.concatenate([s.numbers for s in sets]),
        positions=np.concatenate([s.positions for s in sets]),
        cell=np.concatenate([s.cell for s in sets]),
        pbc=np.concatenate([s.pbc for s in sets]),
        labels=labels,
        meta=meta,
    )


def normalise_meta(meta: dict, n: int) -> dict[str, np.ndarray]:
    """Metadata dict -> column arrays of the schema dtype (unknown columns inferred)."""
    out = {}
    for key, values in meta.items():
        values = list(values) if not isinstance(values, np.ndarray) else values
        if len(values) != n:
            raise DataError(f"metadata column '{key}' has {len(values)} entries, expected {n}")
        dtype, fill = META_COLUMNS.get(key, (None, None))
        if dtype is None:
            arr = np.asarray(values)
            if arr.dtype.kind in "US":
                arr = arr.astype(object)
            out[key] = arr
            continue
        if dtype is str:
            out[key] = np.array([fill if v is None else str(v) for v in values], dtype=object)
        else:
            out[key] = np.array([fill if v is None else v for v in values], dtype=dtype)
    return out


def _labels_from_atoms(atoms_list, n) -> dict[str, np.ndarray]:
    labels: dict[str, np.ndarray] = {}
    total = int(n.sum())
    off = np.concatenate([[0], np.cumsum(n)])

    def ensure(name):
        if name not in labels:
            kind, shape, _ = LABEL_ARRAYS[name]
            rows = total if kind == "atom" else len(atoms_list)
            labels[name] = np.full((rows,) + shape, np.nan)
        return labels[name]

    for i, a in enumerate(atoms_list):
        res = a.calc.results if a.calc is not None else {}
        if "energy" in res:
            ensure("energy")[i] = res["energy"]
        if "forces" in res:
            ensure("forces")[off[i]:off[i + 1]] = res["forces"]
        if "stress" in res:
            s = np.asarray(res["stress"])
            if s.shape == (3, 3):
                s = s[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
            ensure("stress")[i] = s
        if "band_gap" in a.info and a.info["band_gap"] is not None:
            ensure("band_gap")[i] = a.info["band_gap"]
        if a.has("momenta"):
            ensure("velocities")[off[i]:off[i + 1]] = a.get_velocities() / _ASE_VELOCITY_PER_A_FS
    return labels
