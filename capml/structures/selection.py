"""Which structures a run starts from: files, metadata selections, compositions.

``load_structures`` reads any ase-readable file or a capml HDF5 data set (rows
chosen by metadata criteria and row numbers); ``structures_for`` applies a
``Selection`` (the ``selection`` config block of task=phonons and task=md): the
structures of a file at the requested compositions, or, without a file, one
seeded random ordering of the system per composition.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from capml import data as store
from capml.data import DataError
from capml.structures.system import System
from capml.utils.config import plain

HDF5_SUFFIXES = (".h5", ".hdf5")


@dataclass(frozen=True)
class Selection:
    """Starting structures: ``input`` file (None: a random ordering per composition),
    HDF5 metadata criteria ``select``, row number(s) ``index`` after selection, and
    ``compositions`` (x values, or "all": every x the supercell realises, or with a
    file every selected structure)."""

    input: str | None = None
    select: dict | None = None
    index: int | list | str | None = None
    compositions: float | list | str = "all"

    @classmethod
    def from_config(cls, cfg) -> Selection:
        return cls(input=cfg.get("input"), select=plain(cfg.get("select")),
                   index=plain(cfg.get("index")), compositions=plain(cfg.get("compositions")))


def compositions_of(system: System, spec) -> list[float]:
    """'all' -> every composition the supercell realises; else the listed x values."""
    if isinstance(spec, str):
        if spec != "all":
            raise ValueError(f"task.compositions = {spec!r}: expected 'all' or a list of x")
        return [float(x) for x in system.compositions()]
    return [float(x) for x in (spec if isinstance(spec, (list, tuple)) or
                               OmegaConf.is_list(spec) else [spec])]


def load_structures(path, select=None, index=None) -> list:
    """Structures of ``path`` as ase.Atoms with their metadata in ``atoms.info``.

    HDF5 (capml): ``select`` is a mapping of metadata criteria (StructureSet.select),
    ``index`` a row number or list of row numbers applied after selection. Other
    files are read with ase.io.read; ``index`` is then an ase index (e.g. ":" or -1).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such structure file")
    select = plain(select) or {}
    if path.suffix in HDF5_SUFFIXES:
        atoms = _hdf5_structures(path, select, plain(index))
    else:
        if select:
            raise ValueError(f"{path}: task.select works on capml HDF5 files only "
                             f"(got {select} for a {path.suffix or 'plain'} file)")
        from ase.io import read

        atoms = read(path, index=":" if index is None else index)
        atoms = atoms if isinstance(atoms, list) else [atoms]
    if not atoms:
        raise DataError(f"{path}: no structures match select={select} index={index}")
    for k, a in enumerate(atoms):
        a.info.setdefault("id", f"{path.stem}-{k}")
        a.info.setdefault("source", str(path))
    return atoms


def _hdf5_structures(path: Path, select: dict, index) -> list:
    data = store.read(path)
    if select:
        try:
            data = data.select(**select)
        except DataError as err:
            raise DataError(f"{path}: task.select {select}: {err}") from err
    if index is not None:
        rows = np.atleast_1d(np.asarray(index, dtype=int))
        if rows.size and (rows.max() >= len(data) or rows.min() < -len(data)):
            raise DataError(f"{path}: task.index {index} out of range (0..{len(data) - 1} "
                            f"after selection {select})")
        data = data.subset(rows % len(data))
    return data.to_atoms()


def structure_id(atoms, k: int) -> str:
    """A file-name-safe id of a structure (``atoms.info['id']``, else s<k>)."""
    raw = str(atoms.info.get("id") or f"s{k:04d}")
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in raw)


def structures_for(system: System, selection: Selection, seed: int) -> list:
    """Starting structures of a run (see the module docstring); random orderings are
    drawn from generators spawned from ``seed``, one per composition."""
    comps = compositions_of(system, selection.compositions)
    if selection.input is None:
        seeds = np.random.SeedSequence(int(seed)).spawn(len(comps))
        out = []
        for x, ss in zip(comps, seeds):
            atoms = system.random_solid_solution(x, np.random.default_rng(ss))
            atoms.info.update(id=f"x{atoms.info['x']:.4f}-random", source="random ordering")
            out.append(atoms)
        return out
    atoms = load_structures(selection.input, selection.select, selection.index)
    if selection.compositions == "all":
        return atoms
    keep = [a for a in atoms if any(np.isclose(a.info.get("x", np.nan), x) for x in comps)]
    if not keep:
        have = sorted({round(float(a.info.get("x", np.nan)), 4) for a in atoms})
        raise ValueError(f"{selection.input}: no structure with x in "
                         f"{[round(x, 4) for x in comps]} (task.compositions); the file has "
                         f"x = {have}")
    return keep
