"""HDF5 store for StructureSets: atomic write, guarded append, validated read.

Crash safety:
- ``write`` builds the file in memory, writes it to a temporary file next to the
  target with plain file I/O, fsyncs it and renames it over the target, so a crash
  or a full disk leaves either the old file or the new one (and no temporary file).
- ``append``, ``update_rows`` and ``set_attrs`` go through one guarded writer: it
  validates everything before touching the file, bounds the bytes HDF5 may allocate
  (whole chunks, string heaps, metadata) and reserves them on disk with
  ``posix_fallocate`` before HDF5 opens the file, so HDF5 never meets a full disk
  (it corrupts its own metadata and can crash the process when it does). Not enough
  room raises ``DiskFullError`` naming the file, the bytes needed and the bytes free,
  with the file unchanged. HDF5 trims the unused reservation when it closes the file.
- Data go first, the ``n_structures`` attribute last, then a flush. Rows past
  ``n_structures`` (an append cut short by a kill) are ignored by readers and
  overwritten by the next append; an exception mid-append shrinks the data sets back
  to the committed rows. A kill loses at most the rows in flight.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
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
    STRING_DTYPE,
    STRUCTURE_ARRAYS,
    UNITS,
)
from capml.data.structure_set import DataError, StructureSet, normalise_meta

_STR = h5py.string_dtype(STRING_DTYPE)
_MAX_Z = 118
_ATOM_CHUNK, _STRUCTURE_CHUNK = 4096, 512  # rows per HDF5 chunk
_METADATA_BYTES = 64 * 1024  # headroom for HDF5 metadata (chunk indices, headers, heaps)


class DiskFullError(DataError, OSError):
    """Not enough free space to write; the file was left as it was."""


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
    # HDF5 builds the file in memory; only plain file I/O meets the disk, so a full
    # disk is an ordinary OSError instead of corrupt HDF5 state.
    with h5py.File(f"{path.name}.in-memory", "w", driver="core", backing_store=False) as f:
        _init_file(f, config, attrs)
        _append_rows(f, data, start=0)
        f.attrs["n_structures"] = len(data)
        f.flush()
        image = f.id.get_file_image()
    with atomic_path(path) as tmp:
        try:
            with open(tmp, "wb") as fh:
                fh.write(image)
        except OSError as err:
            if err.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise _disk_full(path, len(image), "write the new file") from err
    return path


@contextlib.contextmanager
def atomic_path(path: Path):
    """Yield a temp path in ``path``'s directory; on success fsync + rename over ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file normal rights
        yield Path(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# ------------------------------------------------------------ guarded writer
def free_bytes(path) -> int:
    """Bytes available to this user on the filesystem holding ``path``."""
    st = os.statvfs(Path(path).parent if not Path(path).is_dir() else path)
    return int(st.f_bavail * st.f_frsize)


def _disk_full(path: Path, needed: int, what: str) -> DiskFullError:
    return DiskFullError(errno.ENOSPC, f"{path}: not enough free space to {what}: needs about "
                         f"{needed} bytes, {free_bytes(path)} bytes free on its filesystem; "
                         "the file is unchanged (free some space and rerun to resume)")


@contextlib.contextmanager
def guarded(path: Path, needed_bytes: int, what: str):
    """Open ``path`` for writing after reserving ``needed_bytes`` (an upper bound of
    what HDF5 will allocate) on disk; yields the h5py File."""
    fd = os.open(path, os.O_RDWR)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            raise DataError(f"{path}: open for writing by another process; wait for it to "
                            "finish (one writer per file)") from err
        size = os.fstat(fd).st_size
        try:
            os.posix_fallocate(fd, size, needed_bytes)
        except OSError as err:
            os.ftruncate(fd, size)  # give back a partial reservation; the lock keeps HDF5 out
            if err.errno in (errno.ENOSPC, errno.EDQUOT):
                raise _disk_full(path, needed_bytes, what) from err
            if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
            if free_bytes(path) < needed_bytes:  # no fallocate here: check free space only
                raise _disk_full(path, needed_bytes, what) from err
    finally:
        os.close(fd)  # releases the lock: HDF5 takes its own
    with h5py.File(path, "a") as f:
        yield f
        f.flush()


def _new_chunk_bytes(ds, spec: tuple[int, int], rows) -> int:
    """Bytes of the chunks HDF5 must allocate to write ``rows`` (an iterable of
    (first, stop) row ranges) of ``ds`` (None: a data set still to be created);
    ``spec`` = (rows per chunk, bytes per row). Chunks already on disk cost nothing."""
    chunk_rows, row_bytes = spec
    chunks = {c for a, b in rows if b > a for c in range(a // chunk_rows, (b - 1) // chunk_rows + 1)}
    if ds is not None:
        trailing = (0,) * (ds.ndim - 1)
        chunks = {c for c in chunks if c * chunk_rows >= ds.shape[0] or
                  ds.id.get_chunk_info_by_coord((c * chunk_rows,) + trailing).byte_offset is None}
    return len(chunks) * chunk_rows * row_bytes


def _string_bytes(values) -> int:
    """Upper bound of the global-heap bytes of variable-length strings (a fresh heap
    collection is at least 4 KiB)."""
    return sum(len(str(v).encode()) + 32 for v in values) + 4096


def _row_spec(kind: str, shape: tuple, dtype) -> tuple[int, int]:
    chunk = _ATOM_CHUNK if kind == "atom" else _STRUCTURE_CHUNK
    return chunk, np.dtype(dtype).itemsize * int(np.prod(shape, dtype=int))


def _append_bytes(f: h5py.File, data: StructureSet, n_old: int) -> int:
    """Upper bound of the bytes appending ``data`` to ``f`` makes HDF5 allocate."""
    atom_old = int(np.sum(f["n_atoms"][:n_old])) if n_old else 0
    ranges = {"atom": [(atom_old, atom_old + int(np.sum(data.n_atoms)))],
              "structure": [(n_old, n_old + len(data))]}
    arrays = {"n_atoms": ("structure", (), np.int32), **STRUCTURE_ARRAYS,
              **{k: LABEL_ARRAYS[k] for k in LABEL_ARRAYS if k in data.labels or k in f}}
    need = _METADATA_BYTES
    for key, (kind, shape, dtype) in arrays.items():
        need += _new_chunk_bytes(f.get(key), _row_spec(kind, shape, dtype), ranges[kind])
    meta = normalise_meta(dict(data.meta), len(data))
    for key in set(meta) | set(f["meta"]):
        ds = f["meta"].get(key)
        strings = (ds is None and meta[key].dtype == object) or (
            ds is not None and h5py.check_string_dtype(ds.dtype) is not None)
        rows = ranges["structure"] if ds is not None else [(0, n_old + len(data))]
        need += _new_chunk_bytes(ds, (_STRUCTURE_CHUNK, 16 if strings else 8), rows)
        if strings:
            need += _string_bytes(meta.get(key, [""] * len(data))) + (32 * n_old if ds is None
                                                                      else 0)
    return need


def append(path, data: StructureSet, *, config: str | None = None) -> int:
    """Append structures (creating the file if needed); returns the new count.

    New label/metadata keys are added with unknown values for existing rows.
    """
    path = Path(path)
    validate_set(data)
    if not path.exists():
        write(path, data, config=config)
        return len(data)
    with _open(path) as f:
        _check_header(f, path)
        start = int(f.attrs["n_structures"])
        needed = _append_bytes(f, data, start)
    with guarded(path, needed, f"append {len(data)} structures") as f:
        try:
            _append_rows(f, data, start=start)
            f.flush()  # the rows reach the file before the count that commits them
        except BaseException:
            _truncate_rows(f, start)
            raise
        f.attrs["n_structures"] = start + len(data)
    return start + len(data)


def _truncate_rows(f: h5py.File, n: int) -> None:
    """Shrink every data set to the first ``n`` committed structures."""
    atoms = int(np.sum(f["n_atoms"][:n])) if n else 0
    for key, ds in list(f.items()) + list(f["meta"].items()):
        if isinstance(ds, h5py.Dataset) and ds.maxshape[0] is None:
            per_atom = key in STRUCTURE_ARRAYS and STRUCTURE_ARRAYS[key][0] == "atom" or \
                key in LABEL_ARRAYS and LABEL_ARRAYS[key][0] == "atom"
            ds.resize(atoms if per_atom else n, axis=0)
    f.flush()


def update_rows(path, indices, *, labels: dict | None = None, meta: dict | None = None,
                attrs: dict | None = None) -> None:
    """Overwrite labels/metadata of existing structures in place, then flush.

    ``labels[name]`` is a list (one entry per index) of per-structure values
    (an [n,3] array for forces). Used by labeling to record results as they come.
    """
    path = Path(path)
    indices = [int(i) for i in np.atleast_1d(indices)]
    labels, meta = labels or {}, meta or {}
    with _open(path) as f:  # validate against the file before opening it for write
        _check_header(f, path)
        n = int(f.attrs["n_structures"])
        n_atoms = f["n_atoms"][:n]
        off = np.concatenate([[0], np.cumsum(n_atoms)]).astype(np.int64)
        _check_update(path, indices, labels, n_atoms)
        cols = {k: normalise_meta({k: list(v)}, len(indices))[k] for k, v in meta.items()}
        needed = _update_bytes(f, indices, labels, cols, off) + _attrs_bytes(attrs)
    with guarded(path, needed, f"record {len(indices)} structures") as f:
        for name, values in labels.items():
            ds = _ensure_dataset(f, name, n, int(off[-1]))
            per_atom = LABEL_ARRAYS[name][0] == "atom"
            for i, v in zip(indices, values):
                ds[slice(off[i], off[i + 1]) if per_atom else i] = v
        for key, col in cols.items():
            ds = _ensure_meta(f, key, col, n)
            for i, v in zip(indices, col):
                ds[i] = v
        for key, value in (attrs or {}).items():
            f.attrs[key] = value


def _check_update(path: Path, indices, labels: dict, n_atoms) -> None:
    """Validate indices and label shapes of an update before writing any of it."""
    n = len(n_atoms)
    for i in indices:
        if not 0 <= i < n:
            raise DataError(f"{path}: structure index {i} out of range 0..{n - 1}")
    for name, values in labels.items():
        if name not in LABEL_ARRAYS:
            raise DataError(f"{path}: key '{name}': unknown label")
        kind, shape, _ = LABEL_ARRAYS[name]
        for i, v in zip(indices, values, strict=True):
            want = ((int(n_atoms[i]),) + shape) if kind == "atom" else shape
            if np.shape(v) != want:
                raise DataError(f"{path}: key '{name}' of structure {i}: expected shape "
                                f"{want}, got {np.shape(v)}")


def _update_bytes(f: h5py.File, indices, labels: dict, cols: dict, off) -> int:
    """Upper bound of the bytes an in-place update makes HDF5 allocate."""
    n = len(off) - 1
    need = _METADATA_BYTES
    for name in labels:
        kind, shape, dtype = LABEL_ARRAYS[name]
        rows = [(off[i], off[i + 1]) if kind == "atom" else (i, i + 1) for i in indices]
        need += _new_chunk_bytes(f.get(name), _row_spec(kind, shape, dtype), rows)
    for key, col in cols.items():
        ds = f["meta"].get(key) if "meta" in f else None
        strings = col.dtype == object
        rows = [(i, i + 1) for i in indices] if ds is not None else [(0, n)]  # new: filled
        need += _new_chunk_bytes(ds, (_STRUCTURE_CHUNK, 16 if strings else 8), rows)
        if strings:
            need += _string_bytes(col) + (32 * n if ds is None else 0)
    return need


def _attrs_bytes(attrs: dict | None) -> int:
    return sum(len(str(k)) + len(str(v).encode()) + 256 for k, v in (attrs or {}).items())


def set_attrs(path, **attrs) -> None:
    """Set file attributes (JSON-encodes dicts/lists) and flush."""
    path = Path(path)
    attrs = {k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in attrs.items()}
    with _open(path) as f:
        _check_header(f, path)
    with guarded(path, _METADATA_BYTES + 2 * _attrs_bytes(attrs), "set attributes") as f:
        for k, v in attrs.items():
            f.attrs[k] = v


# ---------------------------------------------------------------------- read
def read(path, indices=None) -> StructureSet:
    """Read (a subset of) a data set, validating keys, shapes and values."""
    path = Path(path)
    with _open(path) as f:
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
    with _open(path) as f:
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
    """Number of committed structures of a data file."""
    path = Path(path)
    with _open(path) as f:
        _check_header(f, path)
        return int(f.attrs["n_structures"])


def _open(path: Path) -> h5py.File:
    """The data file opened read-only; errors name the file and what was expected."""
    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: no such data file")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        size = Path(path).stat().st_size
        what = "an empty file" if size == 0 else f"{size} bytes that are not HDF5"
        raise DataError(f"{path}: expected a capml HDF5 data file, got {what} ({err})") from err


def read_attrs(path) -> dict:
    """File attributes; JSON-encoded ones decoded."""
    with _open(path) as f:
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
    with _open(path) as f:
        _check_header(f, Path(path))
        if "meta" not in f or key not in f["meta"]:
            raise DataError(f"{path}: missing metadata key 'meta/{key}'")
        return _read_column(f["meta"][key], int(f.attrs["n_structures"]))


def read_label(path, key: str) -> np.ndarray:
    """One per-structure label array (e.g. band_gap) without reading structures."""
    with _open(path) as f:
        _check_header(f, Path(path))
        if key not in f:
            raise DataError(f"{path}: missing label key '{key}'")
        if LABEL_ARRAYS[key][0] != "structure":
            raise DataError(f"{path}: '{key}' is per-atom; use read()")
        return f[key][: int(f.attrs["n_structures"])]


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
    f.create_dataset("n_atoms", shape=(0,), maxshape=(None,), dtype=np.int32, chunks=(_ATOM_CHUNK,))
    for key, (kind, shape, dtype) in STRUCTURE_ARRAYS.items():
        f.create_dataset(key, shape=(0,) + shape, maxshape=(None,) + shape, dtype=dtype,
                         chunks=(_ATOM_CHUNK if kind == "atom" else _STRUCTURE_CHUNK,) + shape)
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
                          chunks=(_ATOM_CHUNK if kind == "atom" else _STRUCTURE_CHUNK,) + shape, fillvalue=np.nan)
    return ds


def _ensure_meta(f, key, col, n_structures):
    g = f.require_group("meta")
    if key in g:
        return g[key]
    if col.dtype == object:
        ds = g.create_dataset(key, shape=(n_structures,), maxshape=(None,), dtype=_STR,
                              chunks=(_STRUCTURE_CHUNK,))
        fill = ""
    else:
        fill = META_COLUMNS.get(key, (None, np.nan if col.dtype.kind == "f" else -1))[1]
        ds = g.create_dataset(key, shape=(n_structures,), maxshape=(None,), dtype=col.dtype,
                              chunks=(_STRUCTURE_CHUNK,), fillvalue=fill)
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
