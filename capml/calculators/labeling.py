"""Resumable, parallel labeling of an HDF5 data set with a reference Labeler.

One writer per output file (``capml.calculators.locking``). The output file starts as
an atomic copy of the input; every finished structure
is written in place and flushed at once (labels, ``level``, ``label_status``,
``label_seconds``, ``label_note``). A structure whose status is set is never
recomputed, so a killed job resumes where it stopped and loses at most the
structures in flight. A failed calculation is recorded as ``failed: <reason>``
with NaN labels; it is retried only when asked (``retry_failed``): from scratch (True), or
with only the settings variants it has not failed with yet ("untried"; the calculations
are deterministic, so repeating a failed variant only costs time).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import numpy as np

from capml.calculators import locking, shards
from capml.data import store
from capml.data.structure_set import DataError

log = logging.getLogger(__name__)

_WORKER = {}


RETRY = (False, True, "untried")


def pending_indices(path, retry_failed: bool | str = False,
                    variants: list[str] | None = None) -> np.ndarray:
    """Structures of ``path`` still to be labeled. With ``retry_failed="untried"``, the
    failed ones that have not yet failed with one of ``variants``."""
    n = store.count(path)
    try:
        status = store.read_meta(path, "label_status")
    except DataError:
        return np.arange(n)
    todo = status == ""
    if retry_failed is True:
        todo |= np.char.startswith(status.astype(str), "failed")
    elif retry_failed == "untried":
        variants = variants or []
        todo |= np.array([s.startswith("failed") and bool(set(variants) - tried_variants(s, variants))
                          for s in status])
    return np.flatnonzero(todo)


def tried_variants(status: str, variants: list[str]) -> set[str]:
    """The settings variants a recorded failure ('failed: <name>: <error>; ...') has tried."""
    return {v for v in variants if f"{v}: " in status} if status.startswith("failed") else set()


def prepare_output(input_path, output_path) -> Path:
    """Copy the input to the output atomically unless the output exists (resume)."""
    input_path, output_path = Path(input_path), Path(output_path)
    if output_path.exists():
        return output_path
    if not input_path.exists():
        raise FileNotFoundError(f"{input_path}: no such data file to label")
    store.count(input_path)  # validates the header before copying
    output_path.parent.mkdir(parents=True, exist_ok=True)
    with store.atomic_path(output_path) as tmp:
        shutil.copyfile(input_path, tmp)
    return output_path


def label_file(input_path, output_path, labeler_config: dict, *, n_jobs: int = 1,
               retry_failed: bool | str = False, limit: int | None = None,
               threads_per_job: int | None = None, shuffle_seed: int | None = None,
               shard: tuple[int, int] | None = None) -> dict:
    """Label every pending structure; returns counts {'ok', 'failed', 'skipped'}.

    ``labeler_config`` is a Hydra-instantiable mapping returning a Labeler; it is
    instantiated once per worker process. ``limit`` caps the number of structures
    labeled in this call (for committing a long job in pieces). With
    ``shuffle_seed`` the pending structures are labeled in a seeded random order, so
    that a partly labeled file covers all compositions and methods evenly. ``shard =
    (i, n)`` labels only the pending structures with index i mod n (``capml.calculators
    .shards``; counts then add 'other_shards'). One writer per output file: a second
    one is refused (``locking.FileLocked``). A call with nothing to do leaves the output
    file byte for byte as it was.
    """
    from hydra.utils import instantiate

    if retry_failed not in RETRY:
        raise ValueError(f"retry_failed={retry_failed!r}: expected one of {RETRY}")
    if shard is not None:
        shards.check_shard(*shard)
    with locking.exclusive(output_path):
        out = prepare_output(input_path, output_path)
        labeler = instantiate(labeler_config)  # fail fast on a bad config, in this process
        todo, earlier, counts = _plan(out, labeler, retry_failed, limit, shuffle_seed, shard)
        log.info("%s: %d structures to label with %s (%d already done), %d job(s)",
                 out, len(todo), labeler.level, counts["skipped"], n_jobs)
        if len(todo):
            _record_settings(out, labeler)
            atoms_list = store.read(out).to_atoms()
            threads = threads_per_job or max(1, (os.cpu_count() or 1) // n_jobs)
            jobs = [(int(i), atoms_list[i], earlier.get(int(i), "")) for i in todo]
            run = _run_serial if n_jobs == 1 else _run_pool
            run(out, jobs, labeler_config, labeler, n_jobs, threads, counts)
    return counts


def _plan(out: Path, labeler, retry_failed, limit, shuffle_seed, shard):
    """Indices to label now, the earlier failures of those retried 'untried', and counts."""
    todo = pending_indices(out, retry_failed, labeler.variant_names())
    n = store.count(out)
    counts = {"ok": 0, "failed": 0, "skipped": n - len(todo)}
    if shard is not None:
        mine = shards.in_shard(todo, *shard)
        counts["other_shards"] = len(todo) - len(mine)
        todo = mine
    earlier = {}
    if retry_failed == "untried" and len(todo):
        status = store.read_meta(out, "label_status")
        earlier = {int(i): status[i] for i in todo if status[i]}
    if shuffle_seed is not None:
        todo = np.random.default_rng(shuffle_seed).permutation(todo)
    return (todo if limit is None else todo[:limit]), earlier, counts


def _record_settings(out: Path, labeler) -> None:
    """The labeler's settings in the file's ``calculators`` attribute (written only when
    they change, so that resuming leaves the attribute as it was).

    Between runs on one file a level may change only its SCF controls
    (``Labeler.scf_controls``), fallbacks and code version: the entry it replaces is kept
    in the new one's ``earlier`` list with the number of rows labeled by then. Any other
    change (cutoff, functional, k-points, which PAW setups, properties) would put two levels
    under one name and is refused. PAW setups regenerated with other bytes (GPAW's generator
    rounds differently on another CPU's BLAS kernels) are accepted only when they reproduce
    a labeled row within ``REPRODUCTION_TOLERANCE``; the check is recorded as
    ``reproduced``."""
    settings = {"settings": _jsonable(labeler.settings), "properties": list(labeler.properties),
                "fallbacks": _jsonable(labeler.fallbacks),
                "provenance": _jsonable(labeler.provenance)}
    calculators = store.read_attrs(out).get("calculators") or {}
    calculators = json.loads(calculators) if isinstance(calculators, str) else calculators
    old = calculators.get(labeler.level)
    current = None if old is None else {k: v for k, v in old.items() if k not in _BOOKKEEPING}
    if current == settings:
        return
    if current is not None:
        if changes := level_changes(current, settings, labeler.scf_controls):
            raise ValueError(
                f"{out}: calculator '{labeler.level}' labeled rows of this file with other "
                f"settings ({'; '.join(changes)}): that is another level; give it another "
                "`level` name or label another file")
        levels = store.read_meta(out, "level").astype(str)
        done = int(((store.read_meta(out, "label_status") == "ok") & (levels == labeler.level))
                   .sum())
        if done and (regenerated := regenerated_setups(current, settings)):  # rows to check
            settings["reproduced"] = _check_reproduction(out, labeler, regenerated, done)
        replaced = {**{k: v for k, v in old.items() if k != "earlier"},
                    "replaced": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "n_labeled": done}
        settings["earlier"] = [*old.get("earlier", []), replaced]
        log.warning("%s: calculator '%s' now runs with other SCF controls, fallbacks, code "
                    "version or setup bytes than for its %d labeled rows (kept under 'earlier')",
                    out, labeler.level, done)
    store.set_attrs(out, calculators={**calculators, labeler.level: settings})


def level_changes(old: dict, new: dict, scf_controls) -> list[str]:
    """What differs between two recorded settings of a level beyond its SCF controls,
    fallbacks, code version and the bytes of its PAW setups: each as 'key: old -> new'."""
    out = []
    keys = sorted(set(old["settings"]) | set(new["settings"]))
    for key in (k for k in keys if k not in scf_controls):
        if old["settings"].get(key) != new["settings"].get(key):
            out.append(f"{key}: {old['settings'].get(key)!r} -> {new['settings'].get(key)!r}")
    if list(old["properties"]) != list(new["properties"]):
        out.append(f"properties: {old['properties']} -> {new['properties']}")
    names = [sorted(d.get("provenance", {}).get("setups") or {}) for d in (old, new)]
    if names[0] != names[1]:
        out.append(f"PAW setups: {names[0]} -> {names[1]}")
    return out


def regenerated_setups(old: dict, new: dict) -> list[str]:
    """The PAW setups that two recorded settings of a level both name but with other
    sha256 (the same recipe generated on another machine)."""
    a, b = ((d.get("provenance", {}).get("setups") or {}) for d in (old, new))
    return sorted(name for name in set(a) & set(b) if a[name] != b[name])


# Largest |recomputed - stored| at which a labeled row counts as reproduced (per quantity:
# eV/atom, eV/A, eV/A^3, eV); well above the SCF noise of the demo's GPAW levels and well
# below the errors of any model trained on them.
REPRODUCTION_TOLERANCE = {"energy": 1e-3, "forces": 1e-2, "stress": 1e-4, "band_gap": 5e-3}
_BOOKKEEPING = ("earlier", "reproduced")


def reproduction_errors(data, row: int, labels: dict) -> dict[str, float]:
    """Largest |labels - stored labels| of row ``row`` of StructureSet ``data`` per
    quantity (energy per atom), in the units of ``REPRODUCTION_TOLERANCE``."""
    stored = data.subset([row])
    n_atoms = int(stored.n_atoms[0])
    errors = {}
    for name, value in labels.items():
        diff = np.abs(np.asarray(value, float).ravel() - stored.labels[name].ravel())
        errors[name] = float(diff.max() / (n_atoms if name == "energy" else 1))
    return errors


def _check_reproduction(out: Path, labeler, setups: list[str], n_labeled: int) -> dict:
    """Recompute the first row the level labeled with the regenerated ``setups`` in place;
    the record of the check, or ValueError naming what differs by how much."""
    data = store.read(out)
    ok = (data.meta["label_status"] == "ok") & (data.meta["level"].astype(str) == labeler.level)
    row = int(np.flatnonzero(ok)[0])
    log.warning("%s: PAW setups %s now have other bytes than for the %d rows '%s' labeled; "
                "recomputing row %d to check that they reproduce it", out, setups, n_labeled,
                labeler.level, row)
    labels, _ = labeler(data.subset([row]).to_atoms()[0])
    errors = reproduction_errors(data, row, labels)
    bad = {k: v for k, v in errors.items() if v > REPRODUCTION_TOLERANCE[k]}
    if bad:
        raise ValueError(
            f"{out}: the PAW setups {setups} generated here differ from those that labeled "
            f"its {n_labeled} '{labeler.level}' rows and do not reproduce row {row} "
            f"({data.meta['id'][row]}): "
            + "; ".join(f"{k} off by {v:.3g} > {REPRODUCTION_TOLERANCE[k]:g}"
                        for k, v in bad.items())
            + "; label another file, or use the setups that made this one")
    return {"row": row, "id": str(data.meta["id"][row]), "setups": setups,
            "max_abs_error": errors, "tolerance": dict(REPRODUCTION_TOLERANCE),
            "checked": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _run_serial(out, jobs, labeler_config, labeler, n_jobs, threads, counts) -> None:
    _init_worker(labeler_config, threads, labeler)
    progress = _Progress(len(jobs))
    for job in jobs:
        _record(out, *_label_one(*job), counts, progress)


def _run_pool(out, jobs, labeler_config, labeler, n_jobs, threads, counts) -> None:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # OpenMP runtimes do not survive fork reliably
    progress, queue, running = _Progress(len(jobs)), list(jobs), {}
    with ProcessPoolExecutor(n_jobs, mp_context=ctx, initializer=_init_pool_worker,
                             initargs=(labeler_config, threads)) as pool:
        while queue or running:
            while queue and len(running) < 2 * n_jobs:  # bounded submission
                running[pool.submit(_label_one, *queue.pop(0))] = True
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                running.pop(fut)
                _record(out, *fut.result(), counts, progress)


def failure_summary(path, top: int = 3) -> str:
    """The most common failure reasons recorded in ``path`` (for a run's closing line)."""
    from collections import Counter

    try:
        status = store.read_meta(path, "label_status").astype(str)
    except DataError:
        return "no failures recorded"
    reasons = Counter(s.removeprefix("failed: ")[:160] for s in status if s.startswith("failed"))
    return "; ".join(f"{n} x {r!r}" for r, n in reasons.most_common(top)) or "no failures recorded"


def _init_pool_worker(labeler_config, threads):
    _die_with_parent()
    _init_worker(labeler_config, threads)


def _init_worker(labeler_config, threads, labeler=None):
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    if labeler is None:
        from hydra.utils import instantiate

        labeler = instantiate(labeler_config)
    _WORKER["labeler"] = labeler


def _die_with_parent() -> None:
    """Linux: have the kernel stop this worker when the labeling process dies, so a
    killed job leaves no orphaned calculations behind."""
    import ctypes
    import signal
    import sys

    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _label_one(index: int, atoms, earlier_failure: str = ""):
    """Label one structure; ``earlier_failure`` (a recorded 'failed: ...' status) names the
    variants not to try again and is kept at the front of a new failure."""
    from capml.calculators.reference import LabelingFailed

    labeler = _WORKER["labeler"]
    skip = tried_variants(earlier_failure, labeler.variant_names())
    before = earlier_failure.removeprefix("failed: ") + "; " if earlier_failure else ""
    t0 = time.perf_counter()
    try:
        labels, note = labeler(atoms, skip=skip)
        status = "ok"
    except LabelingFailed as err:
        labels, note, status = {}, "", f"failed: {before}{err}"[:1000]
    except Exception as err:  # any calculator crash is a recorded failure
        labels, note, status = {}, "", f"failed: {before}{type(err).__name__}: {err}"[:1000]
    return index, labels, labeler.level, status, note, time.perf_counter() - t0


def _record(path, index, labels, level, status, note, seconds, counts, progress):
    store.update_rows(path, [index], labels={k: [v] for k, v in labels.items()},
                      meta={"level": [level], "label_status": [status],
                            "label_note": [note], "label_seconds": [seconds]})
    counts["ok" if status == "ok" else "failed"] += 1
    progress.step(index, status, seconds)


class _Progress:
    def __init__(self, total):
        self.total, self.done, self.t0 = total, 0, time.perf_counter()

    def step(self, index, status, seconds):
        self.done += 1
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / self.done * (self.total - self.done)
        log.info("[%d/%d] structure %d %s in %.1f s, ETA %dh%02dm", self.done, self.total,
                 index, status[:80], seconds, eta // 3600, eta % 3600 // 60)


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))
