"""Edges cached next to the HDF5 data set they were built from.

The cache file ``<data dir>/.graph_cache/<stem>-r<cutoff>-<key>.npz`` is keyed by
a SHA-256 of the file's structures (numbers, positions, cell, pbc), the cutoff
and the neighbour-list version, so labels arriving later (labeling in
progress) keep the cache valid, and any change of a structure rebuilds it.
Writes are atomic (temp file + rename), so concurrent sweep jobs are safe.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from capml.data import StructureSet
from capml.graphs.build import Edges, build_edges

log = logging.getLogger(__name__)

CACHE_VERSION = 2


def structure_key(data: StructureSet, cutoff: float) -> str:
    """Hex digest identifying the structures of ``data`` and the graph settings."""
    import vesin

    h = hashlib.sha256()
    for arr in (data.n_atoms, data.numbers, data.positions, data.cell, data.pbc):
        a = np.ascontiguousarray(arr)
        h.update(str(a.dtype).encode())
        h.update(a.tobytes())
    h.update(f"cutoff={float(cutoff):.6f};v={CACHE_VERSION};vesin={vesin.__version__}".encode())
    return h.hexdigest()


def cached_edges(path, data: StructureSet, cutoff: float, use_cache: bool = True) -> Edges:
    """Edges of all structures of ``data`` (read from ``path``), from the cache if valid."""
    if not use_cache:
        return build_edges(data, cutoff)
    path = Path(path)
    key = structure_key(data, cutoff)
    folder = path.parent / ".graph_cache"
    prefix = f"{path.stem}-r{float(cutoff):.2f}-"
    target = folder / f"{prefix}{key[:20]}.npz"
    if target.exists():
        with np.load(target) as z:
            if str(z["key"]) == key:
                return Edges(z["index"].astype(np.int64), z["distance"], z["n_edges"])
    edges = build_edges(data, cutoff)
    try:
        _write_atomic(target, key, edges)
        for stale in folder.glob(f"{prefix}*.npz"):
            if stale != target:
                stale.unlink(missing_ok=True)
        log.info("cached %d graphs (%d edges) in %s", len(data), edges.index.shape[1], target)
    except OSError as err:  # read-only data folder: work without the cache
        log.warning("cannot write graph cache next to %s (%s); graphs are rebuilt each run",
                    path, err)
    return edges


def _write_atomic(target: Path, key: str, edges: Edges) -> None:
    target.parent.mkdir(exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez_compressed(fh, key=key, index=edges.index.astype(np.int32),
                                distance=edges.distance, n_edges=edges.n_edges)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
