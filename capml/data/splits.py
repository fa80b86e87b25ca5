"""Train/validation/test splits of a data set, seeded and stratified.

``assign_splits`` is a pure function of per-structure metadata and a seed: rows
are stratified by composition ``x`` and sampling ``method`` (every stratum is
spread over the splits in proportion, to within one structure), and optionally
grouped (every member of a group lands in the same split, e.g. all cells with
one halide ordering, see ``ordering_groups``). ``write_splits`` stores the
result as the ``meta/split`` column of an HDF5 data set, so that every training
run on that file uses the same split.

``resolve_split`` is the one training-data policy of the GNN and MACE training
(the ``data.split`` config block, ``SplitSettings``): the stored split when every
used row has one, an error when only some have one, else ``assign_splits``; with
``train_size`` the train split is then subsampled (seeded, stratified) for
learning curves, val and test untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from capml.data.store import read, read_meta, update_rows
from capml.data.structure_set import DataError, StructureSet

SPLITS = ("train", "val", "test")
UNUSED = "unused"  # a train row left out by ``train_size``
GROUP_BY = (None, "ordering")


@dataclass(frozen=True)
class SplitSettings:
    """The ``data.split`` config block (see ``resolve_split``)."""

    use_stored: bool = True
    fractions: tuple = (0.8, 0.1, 0.1)  # train, val, test
    seed: int = 0
    group_by: str | None = None  # None | "ordering"
    train_size: int | None = None  # structures kept of the train split (None: all)

    def __post_init__(self):
        if self.group_by not in GROUP_BY:
            raise ValueError(f"data.split.group_by={self.group_by!r}: expected null or "
                             "'ordering'")
        if self.train_size is not None and int(self.train_size) < 1:
            raise ValueError(f"data.split.train_size={self.train_size}: expected a number of "
                             "structures >= 1, or null for the whole train split")

    @classmethod
    def from_config(cls, cfg) -> SplitSettings:
        size = cfg.get("train_size")
        return cls(use_stored=bool(cfg.get("use_stored", True)),
                   fractions=tuple(float(f) for f in cfg.get("fractions", (0.8, 0.1, 0.1))),
                   seed=int(cfg.get("seed", 0)), group_by=cfg.get("group_by"),
                   train_size=None if size is None else int(size))


def assign_splits(x, method, seed: int, fractions=(0.8, 0.1, 0.1), groups=None) -> np.ndarray:
    """Split label ("train" | "val" | "test") for every row.

    ``x`` [N] compositions and ``method`` [N] sampling methods define the strata;
    ``groups`` [N] (optional) are keys whose members must share a split.
    The units (structures, or groups) of each stratum are shuffled (seeded) and
    cut into floor(fraction x size) per split; the one to three units left over go
    to distinct splits chosen by their rounding remainder plus the shortfall
    carried from the strata before. Each split thus holds its fraction of every
    stratum to within one unit and of the whole set to within about one unit,
    and the same (metadata, seed) always gives the same split.
    """
    x = np.asarray(x, dtype=float)
    method = np.asarray(method, dtype=object)
    n = len(x)
    if len(method) != n:
        raise ValueError(f"assign_splits: x has {n} rows, method has {len(method)}")
    frac = np.asarray(fractions, dtype=float)
    if frac.shape != (3,) or np.any(frac < 0) or not np.isclose(frac.sum(), 1.0):
        raise ValueError(f"split fractions {list(fractions)}: expected three non-negative "
                         "numbers (train, val, test) that sum to 1")
    groups = np.arange(n) if groups is None else np.asarray(groups)
    if len(groups) != n:
        raise ValueError(f"assign_splits: groups has {len(groups)} rows, expected {n}")
    rng = np.random.default_rng(seed)
    # One unit per group; its stratum is that of its first member.
    keys, first, unit_of_row = np.unique(groups, return_index=True, return_inverse=True)
    stratum = np.array([f"{round(x[i], 6)}|{method[i]}" for i in first], dtype=object)
    unit_split = np.empty(len(keys), dtype=np.int64)
    carry = np.zeros(3)  # quota - assigned, summed over the strata done so far
    for s in rng.permutation(np.unique(stratum)):
        members = rng.permutation(np.flatnonzero(stratum == s))
        quota = frac * len(members)
        counts = np.floor(quota).astype(np.int64)
        n_extra = len(members) - int(counts.sum())
        score = quota - counts + carry + rng.uniform(0, 1e-9, 3)  # random tie-break
        counts[np.argsort(-score)[:n_extra]] += 1
        carry += quota - counts
        unit_split[members] = np.repeat(np.arange(3), counts)
    return np.array(SPLITS, dtype=object)[unit_split[unit_of_row]]


def labeled(data: StructureSet, keys=("energy", "forces", "stress")) -> StructureSet:
    """Rows with label_status 'ok' (when the column exists) and finite ``keys`` labels
    (the training and test data of an interatomic potential)."""
    ok = np.ones(len(data), bool)
    for key in keys:
        ok &= data.has_label(key)
    if "label_status" in data.meta:
        ok &= data.meta["label_status"] == "ok"
    return data.subset(np.flatnonzero(ok))


def resolve_split(data: StructureSet, settings: SplitSettings, path="data",
                  system=None) -> tuple[np.ndarray, str]:
    """Split label per row of ``data`` ("train" | "val" | "test" | "unused") and where it
    came from ("stored" | "computed"). ``path`` names the file in errors; ``system`` is
    needed for ``group_by="ordering"``."""
    stored = data.meta.get("split")
    labels = None
    if settings.use_stored and stored is not None:
        stored = np.asarray(stored, dtype=object)
        bad = sorted(set(stored) - set(SPLITS) - {""})
        if bad:
            raise DataError(f"{path}: meta/split holds {bad}; expected {SPLITS} (or '' for none)")
        have = stored != ""
        if have.all():
            labels, source = stored, "stored"
        elif have.any():
            raise DataError(f"{path}: meta/split is set for {int(have.sum())} of {len(have)} "
                            "labeled structures; store a split for all rows (python simulate.py "
                            "task=split) or set data.split.use_stored=false")
    if labels is None:
        groups = None
        if settings.group_by == "ordering":
            if system is None:
                raise ValueError("data.split.group_by=ordering needs the system config")
            groups = ordering_groups(data, system)
        labels, source = assign_splits(data.meta["x"], data.meta["method"], settings.seed,
                                       settings.fractions, groups), "computed"
    if settings.train_size is not None:
        labels = subsample_train(labels, data.meta["x"], data.meta["method"],
                                 settings.train_size, settings.seed, path)
    return labels, source


def subsample_train(labels, x, method, size: int, seed: int, path="data") -> np.ndarray:
    """``labels`` with all but ``size`` train rows relabeled "unused": the kept rows are
    drawn per stratum (x, method) in proportion to its share of the train split (largest
    remainders, ties broken at random), seeded by ``seed``; val/test rows unchanged."""
    labels = np.asarray(labels, dtype=object).copy()
    train = np.flatnonzero(labels == "train")
    if size > len(train):
        raise ValueError(f"{path}: data.split.train_size={size} exceeds the {len(train)} "
                         "structures of the train split")
    rng = np.random.default_rng([int(seed), int(size)])
    stratum = np.array([f"{round(float(x[i]), 6)}|{method[i]}" for i in train], dtype=object)
    names, sizes = np.unique(stratum, return_counts=True)
    quota = size * sizes / len(train)
    counts = np.floor(quota).astype(np.int64)
    extra = np.argsort(-(quota - counts + rng.uniform(0, 1e-9, len(names))))[:size - counts.sum()]
    counts[extra] += 1
    keep = np.concatenate([rng.choice(train[stratum == name], k, replace=False)
                           for name, k in zip(names, counts)])
    labels[np.setdiff1d(train, keep)] = UNUSED
    return labels


def ordering_groups(data: StructureSet, system) -> np.ndarray:
    """Key of the symmetry-distinct ordering of the substituted sublattice per structure.

    Cells must have been built by ``system`` (same atom order as
    ``system.ordered_supercell``). Two cells share a key when one ordering maps
    onto the other by a space-group operation of the ideal supercell (spglib),
    so e.g. all eight single-dopant cells of a 2x2x2 supercell share one key.
    """
    ideal = system.ordered_supercell(0.0)
    sites = system.sublattice_indices(ideal)
    n = len(ideal)
    off = data.offsets
    host_dopant = {_number(system.host), _number(system.dopant)}
    fixed = np.setdiff1d(np.arange(n), sites)
    perms = _sublattice_permutations(ideal, sites)
    keys = np.empty(len(data), dtype=object)
    for i in range(len(data)):
        z = data.numbers[off[i]:off[i + 1]]
        if len(z) != n or np.any(z[fixed] != ideal.numbers[fixed]) or \
                not set(np.unique(z[sites])) <= host_dopant:
            raise DataError(f"structure {i}: its atoms do not follow the order of the "
                            f"{system.name} supercell ({n} atoms, sublattice "
                            f"{system.sublattice}); cannot group it by ordering")
        occ = (z[sites] == _number(system.dopant)).astype(np.uint8)
        images = occ[perms]  # [n_ops, n_sites]: the ordering under every operation
        best = images[np.lexsort(images.T[::-1])[0]]
        keys[i] = "".join(map(str, best))
    return keys


def _number(symbol: str) -> int:
    from ase.data import atomic_numbers

    return atomic_numbers[symbol]


def _sublattice_permutations(atoms, sites) -> np.ndarray:
    """[n_ops, n_sites]: site index each symmetry operation sends every sublattice site to."""
    import spglib

    types = atoms.numbers.copy()
    types[sites] = 0  # the sublattice as one species: the symmetry of the ideal supercell
    cell = (atoms.cell.array, atoms.get_scaled_positions(), types)
    sym = spglib.get_symmetry(cell, symprec=1e-4)
    frac = atoms.get_scaled_positions()[sites]
    perms = []
    for rot, trans in zip(sym["rotations"], sym["translations"]):
        image = frac @ rot.T + trans
        diff = image[:, None, :] - frac[None, :, :]
        diff -= np.round(diff)
        match = np.linalg.norm(diff, axis=2) < 1e-3
        if not np.all(match.sum(axis=1) == 1):
            raise DataError("symmetry operation does not permute the sublattice sites")
        perms.append(np.argmax(match, axis=1))
    return np.array(perms)


def write_splits(path, seed: int, fractions=(0.8, 0.1, 0.1), system=None,
                 group_by: str | None = None, reassign: bool = False) -> np.ndarray:
    """Store ``assign_splits`` as ``meta/split`` for the rows of ``path`` without one.

    Rows that already have a split keep it (so structures appended later never move a
    cell between splits); the new rows are stratified among themselves with a seed
    derived from ``seed`` and the number of rows kept. ``reassign=True`` recomputes every
    row. ``group_by="ordering"`` (needs ``system``) keeps every ordering in one split and
    therefore assigns all rows at once. Returns the split labels of all rows.
    """
    path = Path(path)
    x = read_meta(path, "x")
    method = read_meta(path, "method")
    try:
        existing = read_meta(path, "split").astype(object)
    except DataError:
        existing = np.full(len(x), "", dtype=object)
    todo = np.arange(len(x)) if reassign else np.flatnonzero(existing == "")
    if len(todo) == 0:
        return existing
    kept = len(x) - len(todo)
    groups = None
    if group_by == "ordering":
        if system is None:
            raise ValueError("write_splits(group_by='ordering') needs the system")
        if kept:
            raise ValueError(f"{path}: {kept} rows already have a split; group_by='ordering' "
                             "assigns whole groups at once: rerun with reassign=true")
        groups = ordering_groups(read(path), system)
    elif group_by is not None:
        raise ValueError(f"group_by={group_by!r}: expected None or 'ordering'")
    labels = existing.copy()
    labels[todo] = assign_splits(x[todo], method[todo], [seed, kept] if kept else seed,
                                 fractions, groups)
    update_rows(path, todo, meta={"split": list(labels[todo])},
                attrs={"split_seed": int(seed), "split_fractions": str(list(fractions)),
                       "split_group_by": group_by or ""})
    return labels
