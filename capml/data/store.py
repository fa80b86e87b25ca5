"""HDF5 store for StructureSets: atomic write, crash-safe append, validated read.

Crash safety:
- ``write`` builds a temporary file next to the target, fsyncs it and renames it
  over the target, so a crash leaves either the old file or the new one.
- ``append`` and ``update_rows`` validate everything before touching the file,
  then write data first and bump the ``n_structures`` attribute last, followed by
  a flush. Rows past ``n_structures`` (an append cut short) are ignored by
  readers and overwritten by the next append: a kill loses at most the rows in flight.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from capml.data.schema import (
    LABEL_ARRAYS,
    META_COLUMNS,
    SCHEMA_VERSION,
    STRUCTURE_ARRAYS,
    UNITS,
)
from capml.data.structure_set import DataError, StructureSet, concat, normalise_meta

_STR = h5py.string_dtype("utf-8")
_MAX_Z = 118


# ---------------------------------------------------------------- validation
def validate_set(s: StructureSet, where: str = "input") -> None:
    """Raise DataError naming ``where`` and the key if ``s`` is malformed."""
    n = len(s.n_atoms)
    total = int(np.sum(s.n_atoms)) if n else 0
    if n and np.any(np.asarray(s.n_atoms) <= 0):
        raise DataError(f"{where}: key 'n_atoms': expected positive atom counts, "
                        f"got {np.asarray(s.n_atoms).min()}")
    expect = {"numbers": (total,), "positions": (total, 3), "cell": (n, 3, 3), "pbc": (n, 3)}
    for key, shape in expect.items():
        got = np.shape(getattr(s, key))
        if got != shape:
            raise DataError(f"{where}: key '{key}': expected shape {shape} "
                            f"(inconsistent atom counts?), got {got}")
    if total and not np.all(np.isfinite(s.positions)):
        bad = int(np.flatnonzero(~np.isfinite(s.positions).all(axis=1))[0])
        raise DataError(f"{where}: key 'positions': expected finite coordinates, "
                        f"got NaN/inf at atom row {bad}")
    if n and not np.all(np.isfinite(s.cell)):
        raise DataError(f"{where}: key 'cell': expected finite lattice vectors, got NaN/inf")
    if total:
        z = np.asarray(s.numbers)
        bad = (z < 1) | (z > _MAX_Z)
        if bad.any():
            raise DataError(f"{where}: key 'numbers': unknown element with atomic number "
                            f"{int(z[bad][0])} (expected 1..{_MAX_Z})")
    for key, arr in s.labels.items():
        if key not in LABEL_ARRAYS:
            raise DataError(f"{where}: key '{key}': unknown label (expected one of "
                            f"{sorted(LABEL_ARRAYS)})")
        kind, shape, _ = LABEL_ARRAYS[key]
        rows = total if kind == "atom" else n
        if np.shape(arr) != (rows,) + shape:
            raise DataError(f"{where}: key '{key}': expected shape {(rows,) + shape}, "
                            f"got {np.shape(arr)}")
    for key, col in s.meta.items():
        if len(col) != n:
            raise DataError(f"{where}: metadata '{key}': expected {n} entries, got {len(col)}")


# --------------------------------------------------------------------- write
def write(path, data: StructureSet, *, config: str | None = None, attrs: dict | None = None,
          overwrite: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (temp file + fsync + rename).

    ``config`` is the generating config (YAML text) stored as a file attribute.
    """
    path = Path(path)
    validate_set(data)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: exists and overwrite=False")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            _init_file(f, config, attrs)
            _append_rows(f, data, start=0)
            f.attrs["n_structures"] = len(data)
    return path


@contextlib.contextmanager
def atomic_path(path: Path):
    """Yield a temp path in ``path``'s directory; on success fsync + rename over ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file normal rights
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def append(path, data: StructureSet, *, config: str | None = None) -> int:
    """Append structures (creating the file if needed); returns the new count.

    New label/metadata keys are added with unknown values for existing rows.
    """
    path = Path(path)
    validate_set(data)
    if not path.exists():
        write(path, data, config=config)
        return len(data)
    with h5py.File(path, "a") as f:
        _check_header(f, path)
        start = int(f.attrs["n_structures"])
        _append_rows(f, data, start=start)
        f.attrs["n_structures"] = start + len(data)
        f.flush()
    return start + len(data)


def update_rows(path, indices, *, labels: dict | None = None, meta: dict | None = None,
                attrs: dict | None = None) -> None:
    """Overwrite labels/metadata of existing structures in place, then flush.

    ``labels[name]`` is a list (one entry per index) of per-structure values
    (an [n,3] array for forces). Used by labeling to record results as they come.
    """
    path = Path(path)
    indices = [int(i) for i in np.atleast_1d(indices)]
    labels, meta = labels or {}, meta or {}
    with h5py.File(path, "r") as f:  # validate against the file before opening it for write
        _check_header(f, path)
        n = int(f.attrs["n_structures"])
        n_atoms = f["n_atoms"][:n]
    off = np.concatenate([[0], np.cumsum(n_atoms)])
    for i in indices:
        if not 0 <= i < n:
            raise DataError(f"{path}: structure index {i} out of range 0..{n - 1}")
    # Validate all values before writing any.
    for name, values in labels.items():
        if name not in LABEL_ARRAYS:
            raise DataError(f"{path}: key '{name}': unknown label")
        kind, shape, _ = LABEL_ARRAYS[name]
        for i, v in zip(indices, values, strict=True):
            want = ((int(n_atoms[i]),) + shape) if kind == "atom" else shape
            if np.shape(v) != want:
                raise DataError(f"{path}: key '{name}' of structure {i}: expected shape "
                                f"{want}, got {np.shape(v)}")
    with h5py.File(path, "a") as f:
        for name, values in labels.items():
            ds = _ensure_dataset(f, name, n, int(off[-1]))
            kind = LABEL_ARRAYS[name][0]
            for i, v in zip(indices, values):
                if kind == "atom":
                    ds[off[i]:off[i + 1]] = v
                else:
                    ds[i] = v
        for key, values in meta.items():
            col = normalise_meta({key: list(values)}, len(indices))[key]
            ds = _ensure_meta(f, key, col, n)
            for i, v in zip(indices, col):
                ds[i] = v
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
        f.flush()


def set_attrs(path, **attrs) -> None:
    """Set file attributes (JSON-encodes dicts/lists) and flush."""
    with h5py.File(path, "a") as f:
        _check_header(f, Path(path))
        for k, v in attrs.items():
            f.attrs[k] = json.dumps(v) if isinstance(v, (dict, list)) else v
        f.flush()


# ---------------------------------------------------------------------- read
def read(path, indices=None) -> StructureSet:
    """Read (a subset of) a data set, validating keys, shapes and values."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such data file")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise DataError(f"{path}: not a readable HDF5 file ({err})") from err
    with f:
        _check_header(f, path)
        n = int(f.attrs["n_structures"])
        for key in ("n_atoms",) + tuple(STRUCTURE_ARRAYS):
            if key not in f:
                raise DataError(f"{path}: missing key '{key}' (required by schema "
                                f"v{SCHEMA_VERSION})")
        n_atoms = f["n_atoms"][:n].astype(np.int64)
        if len(n_atoms) != n:
            raise DataError(f"{path}: key 'n_atoms': expected {n} entries "
                            f"(attribute n_structures), got {len(n_atoms)}")
        total = int(n_atoms.sum())
        data = StructureSet(
            n_atoms=n_atoms,
            numbers=f["numbers"][:total].astype(np.int64),
            positions=f["positions"][:total],
            cell=f["cell"][:n],
            pbc=f["pbc"][:n].astype(bool),
            labels={k: f[k][: total if LABEL_ARRAYS[k][0] == "atom" else n]
                    for k in LABEL_ARRAYS if k in f},
            meta={k: _read_column(f["meta"][k], n) for k in f.get("meta", {})},
        )
    validate_set(data, where=str(path))
    return data if indices is None else data.subset(indices)


def iterate(path, chunk_size: int = 1000):
    """Yield the data set in StructureSet chunks of ``chunk_size`` structures."""
    n = count(path)
    for start in range(0, n, chunk_size):
        yield read_range(path, start, min(start + chunk_size, n))


def read_range(path, start: int, stop: int) -> StructureSet:
    """Structures ``start:stop`` without reading the rest of the file."""
    path = Path(path)
    with h5py.File(path, "r") as f:
        _check_header(f, path)
        n = int(f.attrs["n_structures"])
        stop = min(stop, n)
        n_atoms_all = f["n_atoms"][:n].astype(np.int64)
        off = np.concatenate([[0], np.cumsum(n_atoms_all)])
        a, b = int(off[start]), int(off[stop])
        data = StructureSet(
            n_atoms=n_atoms_all[start:stop],
            numbers=f["numbers"][a:b].astype(np.int64),
            positions=f["positions"][a:b],
            cell=f["cell"][start:stop],
            pbc=f["pbc"][start:stop].astype(bool),
            labels={k: (f[k][a:b] if LABEL_ARRAYS[k][0] == "atom" else f[k][start:stop])
                    for k in LABEL_ARRAYS if k in f},
            meta={k: _read_column(f["meta"][k], n)[start:stop] for k in f.get("meta", {})},
        )
    validate_set(data, where=str(path))
    return data


def count(path) -> int:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such data file")
    with h5py.File(path, "r") as f:
        _check_header(f, path)
        return int(f.attrs["n_structures"])


def read_attrs(path) -> dict:
    """File attributes; JSON-encoded ones decoded."""
    with h5py.File(path, "r") as f:
        out = {}
        for k, v in f.attrs.items():
            if isinstance(v, bytes):
                v = v.decode()
            if isinstance(v, str) and v[:1] in "{[":
                with contextlib.suppress(json.JSONDecodeError):
                    v = json.loads(v)
            out[k] = v.item() if hasattr(v, "item") else v
        return out


def read_meta(path, key: str) -> np.ndarray:
    """One metadata column without reading structures."""
    with h5py.File(path, "r") as f:
        _check_header(f, Path(path))
        if "meta" not in f or key not in f["meta"]:
            raise DataError(f"{path}: missing metadata key 'meta/{key}'")
        return _read_column(f["meta"][key], int(f.attrs["n_structures"]))


def read_label(path, key: str) -> np.ndarray:
    """One per-structure label array (e.g. band_gap) without reading structures."""
    with h5py.File(path, "r") as f:
        _check_header(f, Path(path))
        if key not in f:
            raise DataError(f"{path}: missing label key '{key}'")
        if LABEL_ARRAYS[key][0] != "structure":
            raise DataError(f"{path}: '{key}' is per-atom; use read()")
        return f[key][: int(f.attrs["n_structures"])]


def from_files(paths) -> StructureSet:
    """Read and concatenate several data files."""
    return concat([read(p) for p in paths])


# ------------------------------------------------------------------- helpers
def _package_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("capml", "numpy", "h5py", "ase", "phonopy", "spglib", "tblite", "gpaw",
                "torch", "torch-geometric", "mace-torch"):
        with contextlib.suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
    import capml

    out.setdefault("capml", capml.__version__)
    return out


def _init_file(f: h5py.File, config: str | None, attrs: dict | None) -> None:
    f.attrs["schema_version"] = SCHEMA_VERSION
    f.attrs["units"] = json.dumps(UNITS)
    f.attrs["packages"] = json.dumps(_package_versions())
    f.attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    f.attrs["config"] = config or ""
    f.attrs["n_structures"] = 0
    for k, v in (attrs or {}).items():
        f.attrs[k] = json.dumps(v) if isinstance(v, (dict, list)) else v
    f.create_dataset("n_atoms", shape=(0,), maxshape=(None,), dtype=np.int32, chunks=(4096,))
    for key, (kind, shape, dtype) in STRUCTURE_ARRAYS.items():
        f.create_dataset(key, shape=(0,) + shape, maxshape=(None,) + shape, dtype=dtype,
                         chunks=(4096 if kind == "atom" else 512,) + shape)
    f.create_group("meta")


def _check_header(f: h5py.File, path: Path) -> None:
    if "schema_version" not in f.attrs:
        raise DataError(f"{path}: missing attribute 'schema_version' (not a capml data file?)")
    v = int(f.attrs["schema_version"])
    if v != SCHEMA_VERSION:
        raise DataError(f"{path}: attribute 'schema_version' is {v}, expected {SCHEMA_VERSION}")
    if "n_structures" not in f.attrs:
        raise DataError(f"{path}: missing attribute 'n_structures'")


def _ensure_dataset(f, name, n_structures, n_atom_rows):
    if name in f:
        return f[name]
    kind, shape, dtype = LABEL_ARRAYS[name]
    rows = n_atom_rows if kind == "atom" else n_structures
    ds = f.create_dataset(name, shape=(rows,) + shape, maxshape=(None,) + shape, dtype=dtype,
                          chunks=(4096 if kind == "atom" else 512,) + shape, fillvalue=np.nan)
    return ds


def _ensure_meta(f, key, col, n_structures):
    g = f.require_group("meta")
    if key in g:
        return g[key]
    if col.dtype == object:
        ds = g.create_dataset(key, shape=(n_structures,), maxshape=(None,), dtype=_STR,
                              chunks=(512,))
        fill = ""
    else:
        fill = META_COLUMNS.get(key, (None, np.nan if col.dtype.kind == "f" else -1))[1]
        ds = g.create_dataset(key, shape=(n_structures,), maxshape=(None,), dtype=col.dtype,
                              chunks=(512,), fillvalue=fill)
    if n_structures:  # allocate explicitly: h5py cannot read unallocated vlen-string chunks
        ds[:] = np.full(n_structures, fill, dtype=object if col.dtype == object else col.dtype)
    return ds


def _resize_write(ds, start, values):
    stop = start + len(values)
    if ds.shape[0] < stop:
        ds.resize(stop, axis=0)
    if len(values):
        ds[start:stop] = values


def _append_rows(f: h5py.File, data: StructureSet, start: int) -> None:
    """Write ``data`` at structure row ``start`` (data before the count attribute)."""
    n_old = start
    atom_start = int(np.sum(f["n_atoms"][:n_old])) if n_old else 0
    n_new = len(data)
    atoms_new = int(np.sum(data.n_atoms))
    _resize_write(f["n_atoms"], start, np.asarray(data.n_atoms, dtype=np.int32))
    _resize_write(f["numbers"], atom_start, np.asarray(data.numbers, dtype=np.int16))
    _resize_write(f["positions"], atom_start, data.positions)
    _resize_write(f["cell"], start, data.cell)
    _resize_write(f["pbc"], start, data.pbc)
    for name in set(LABEL_ARRAYS) & (set(data.labels) | set(f.keys())):
        ds = _ensure_dataset(f, name, n_old, atom_start)
        kind, shape, _ = LABEL_ARRAYS[name]
        rows = atoms_new if kind == "atom" else n_new
        vals = data.labels.get(name, np.full((rows,) + shape, np.nan))
        _resize_write(ds, atom_start if kind == "atom" else start, vals)
    meta = normalise_meta(dict(data.meta), n_new)
    for key, ds in f["meta"].items():
        if key not in meta:  # column known to the file but absent from the new rows
            meta[key] = np.full(n_new, _fill_of(ds), dtype=object if ds.dtype.kind == "O"
                                else ds.dtype)
    for key, col in meta.items():
        ds = _ensure_meta(f, key, col, n_old)
        if ds.dtype.kind == "O" or h5py.check_string_dtype(ds.dtype):
            col = np.array([str(v) for v in col], dtype=object)
        _resize_write(ds, start, col)


def _fill_of(ds):
    if h5py.check_string_dtype(ds.dtype):
        return ""
    return np.nan if ds.dtype.kind == "f" else -1


def _read_column(ds, n) -> np.ndarray:
    v = ds[:n]
    if h5py.check_string_dtype(ds.dtype):
        return np.array([s.decode() if isinstance(s, bytes) else s for s in v], dtype=object)
    return v
