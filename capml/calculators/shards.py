"""Labeling split over independent jobs, and the merge of their files.

Shard ``i`` of ``n`` labels the pending structures whose row index is ``i`` mod ``n``
(rows are only ever appended, so the partition is stable across reruns) into its own
file ``<stem>.shard-<i>-of-<n><suffix>`` beside the main file: a full copy of it in which
only that shard's rows get labels. Shards therefore run as separate cluster jobs (one
Hydra multirun job each) with no shared file. ``merge`` checks that every shard holds
the main file's structures (ids, species, positions, cells) and that all shards used the
same calculator settings, then writes the shards' labels into the main file atomically.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np

from capml.calculators import locking
from capml.data import store
from capml.data.schema import LABEL_ARRAYS
from capml.data.structure_set import DataError, StructureSet

log = logging.getLogger(__name__)

LABEL_META = ("level", "label_status", "label_note", "label_seconds")


def shard_path(path, shard: int, n_shards: int) -> Path:
    path = Path(path)
    return path.with_name(f"{path.stem}.shard-{shard}-of-{n_shards}{path.suffix}")


def check_shard(shard: int, n_shards: int) -> None:
    if not (isinstance(n_shards, int) and n_shards >= 1 and isinstance(shard, int)
            and 0 <= shard < n_shards):
        raise ValueError(f"task.shard={shard!r}, task.n_shards={n_shards!r}: expected "
                         "integers with 0 <= shard < n_shards")


def in_shard(indices: np.ndarray, shard: int, n_shards: int) -> np.ndarray:
    """The structure indices that belong to ``shard``."""
    return indices[indices % n_shards == shard]


def merge(path, n_shards: int) -> dict:
    """Write the labels of the ``n_shards`` shard files of ``path`` into ``path``.

    Returns {'merged': rows taken from shards, 'ok', 'failed', 'pending'} of the merged
    file. Raises DataError naming the shard file and what disagrees; ``path`` is then
    unchanged. A second run with nothing new leaves ``path`` untouched.
    """
    path = Path(path)
    shards = [shard_path(path, i, n_shards) for i in range(n_shards)]
    if not path.exists():
        raise DataError(f"merge: {path} does not exist (shards label copies of task.input: "
                        "merge into that file, or copy it here first)")
    missing = [str(s) for s in shards if not s.exists()]
    if missing:
        raise DataError(f"merge {path}: missing shard files {missing} (run those shards first)")
    with locking.exclusive(path, f"merge of {n_shards} shards"):
        main = store.read(path)
        calculators = _calculators(path)
        updates = {}
        for i, shard in enumerate(shards):
            with locking.exclusive(shard, f"merge into {path}"):  # no shard job still running
                data = store.read(shard)
            _check_same_structures(main, data, shard)
            calculators = _merged_calculators(calculators, _calculators(shard), shard)
            rows = _labeled_rows(main, data, i, n_shards)
            if rows:
                updates[shard] = (rows, data)
        if updates:
            _write_merged(path, updates, calculators)
    try:
        status = store.read_meta(path, "label_status").astype(str)
    except DataError:  # nothing labeled anywhere yet
        status = np.full(len(main), "")
    return {"merged": sum(len(r) for r, _ in updates.values()), "ok": int((status == "ok").sum()),
            "failed": int(np.char.startswith(status, "failed").sum()),
            "pending": int((status == "").sum())}


def _calculators(path) -> dict:
    value = store.read_attrs(path).get("calculators") or {}
    return json.loads(value) if isinstance(value, str) else dict(value)


def _check_same_structures(main: StructureSet, shard: StructureSet, where: Path) -> None:
    if len(shard) != len(main):
        raise DataError(f"{where}: {len(shard)} structures, the main file has {len(main)} "
                        "(a shard of another data set, or the main file grew: relabel)")
    ids = main.meta.get("id"), shard.meta.get("id")
    if ids[0] is not None and (ids[1] is None or list(ids[0]) != list(ids[1])):
        raise DataError(f"{where}: structure ids differ from the main file's")
    same = (np.array_equal(main.n_atoms, shard.n_atoms)
            and np.array_equal(main.numbers, shard.numbers)
            and np.array_equal(main.positions, shard.positions)
            and np.array_equal(main.cell, shard.cell))
    if not same:
        raise DataError(f"{where}: structures (species, positions or cells) differ from the "
                        "main file's")


def _merged_calculators(merged: dict, shard: dict, where: Path) -> dict:
    for level, settings in shard.items():
        if level in merged and merged[level] != settings:
            raise DataError(f"{where}: calculator '{level}' settings differ from those of the "
                            f"main file or an earlier shard ({settings} vs {merged[level]})")
    return {**merged, **shard}


def _labeled_rows(main: StructureSet, shard: StructureSet, i: int, n_shards: int) -> list[int]:
    """Rows of shard ``i`` whose labeling record differs from the main file's."""
    if "label_status" not in shard.meta:
        return []
    rows = in_shard(np.arange(len(shard)), i, n_shards)
    old = main.meta.get("label_status", np.full(len(main), ""))
    new = shard.meta["label_status"]
    seconds = main.meta.get("label_seconds", np.full(len(main), np.nan))
    return [int(r) for r in rows if new[r] != "" and (
        new[r] != old[r] or shard.meta["label_seconds"][r] != seconds[r])]


def _write_merged(path: Path, updates: dict[Path, tuple[list[int], StructureSet]],
                  calculators: dict) -> None:
    """Copy of ``path`` with each shard's labeled rows, renamed over it (atomic)."""
    with store.atomic_path(path) as tmp:
        shutil.copyfile(path, tmp)
        for rows, data in updates.values():
            part = data.subset(rows)
            off = part.offsets
            labels = {}
            for k, v in part.labels.items():
                per_atom = LABEL_ARRAYS[k][0] == "atom"
                labels[k] = [v[off[j]:off[j + 1]] if per_atom else v[j] for j in range(len(rows))]
            store.update_rows(tmp, rows, labels=labels,
                              meta={k: list(part.meta[k]) for k in LABEL_META if k in part.meta})
        store.set_attrs(tmp, calculators=calculators)
    log.info("merged %d labeled rows into %s", sum(len(r) for r, _ in updates.values()), path)
