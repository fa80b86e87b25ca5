"""``simulate.py task=relax task.input=FILE``: relax structures from any structure file
(every format ase reads) or from a capml HDF5 data set (rows chosen with
``task.select`` metadata criteria and/or ``task.index``).

Writes ``relaxed.h5`` (energy, forces, stress; meta method=relaxed, converged,
n_steps, max_force, source), ``relaxed.extxyz`` and ``relax.csv``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from capml import data as store
from capml.data import DataError, StructureSet
from capml.simulation.relax import RelaxError, RelaxResult, relax

log = logging.getLogger(__name__)

HDF5_SUFFIXES = (".h5", ".hdf5")


def load_structures(path, select=None, index=None) -> list:
    """Structures of ``path`` as ase.Atoms with their metadata in ``atoms.info``.

    HDF5 (capml): ``select`` is a mapping of metadata criteria (StructureSet.select),
    ``index`` a row number or list of row numbers applied after selection. Other
    files are read with ase.io.read; ``index`` is then an ase index (e.g. ":" or -1).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such structure file")
    select = _plain(select) or {}
    if path.suffix in HDF5_SUFFIXES:
        data = store.read(path)
        if select:
            try:
                data = data.select(**select)
            except DataError as err:
                raise DataError(f"{path}: task.select {select}: {err}") from err
        if index is not None:
            rows = np.atleast_1d(np.asarray(_plain(index), dtype=int))
            if rows.size and (rows.max() >= len(data) or rows.min() < -len(data)):
                raise DataError(f"{path}: task.index {index} out of range (0..{len(data) - 1} "
                                f"after selection {select})")
            data = data.subset(rows % len(data))
        atoms = data.to_atoms()
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


def structure_id(atoms, k: int) -> str:
    """A file-name-safe id of a structure."""
    raw = str(atoms.info.get("id") or f"s{k:04d}")
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in raw)


class RelaxFailed(RuntimeError):
    """Every calculator settings variant failed during a relaxation."""


def relax_with_fallbacks(atoms, labeler, **kwargs) -> tuple[RelaxResult, str]:
    """Relax with the labeler's settings; when its calculation fails (e.g. an SCF that
    does not converge), go on from the geometry reached with each of its fallback
    settings in turn. Returns the result and a note naming the fallback used ('' if
    none); raises RelaxFailed listing every error."""
    errors, start, steps = [], atoms, 0
    for k, override in enumerate([{}] + list(labeler.fallbacks)):
        try:
            result = relax(start, labeler.build(**{**labeler.settings, **override}), **kwargs)
        except RelaxError as err:
            message = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
            errors.append(f"{override or 'default'}: {message} (after {err.n_steps} steps)")
            log.warning("relaxation: calculator failed with %s settings after %d steps: %s",
                        override or "default", err.n_steps, message)
            start, steps = err.atoms, steps + err.n_steps
            continue
        result.n_steps += steps
        return result, (f"fallback {k}: {override}" if k else "")
    raise RelaxFailed("; ".join(errors))


def failed_result(atoms, error: str) -> RelaxResult:
    """A RelaxResult standing for a failed relaxation (the start structure, NaN energy)."""
    return RelaxResult(atoms=atoms.copy(), energy=float("nan"), max_force=float("nan"),
                       converged=False, n_steps=0, note=f"failed: {error}"[:1000])


def relaxed_set(results, atoms_in, level: str, extra: dict | None = None) -> StructureSet:
    """Relaxed structures as a StructureSet with the run's metadata (``relax_note``:
    the fallback used, or 'failed: <errors>' with NaN energy)."""
    out = []
    for res, a in zip(results, atoms_in):
        r = res.atoms
        r.info = {k: v for k, v in a.info.items()
                  if k != "band_gap" and not isinstance(v, (dict, list))}  # gap: not of r
        r.info.update(method="relaxed", level=level, converged=int(res.converged),
                      n_steps=res.n_steps, max_force=res.max_force,
                      source=a.info.get("source", ""), relax_note=res.note)
        out.append(r)
    data = StructureSet.from_atoms(out)
    keys = {k for a in out for k in a.info} - set(data.meta)
    for key in sorted(keys):  # from_atoms keeps schema columns; add the rest
        data.meta[key] = np.asarray([a.info.get(key) for a in out])
    for key, values in (extra or {}).items():
        data.meta[key] = np.asarray(values)
    return data


def run(cfg: DictConfig) -> Path:
    t = cfg.task
    atoms = load_structures(t.input, t.get("select"), t.get("index"))
    labeler = instantiate(cfg.calculator)
    results = []
    for k, a in enumerate(atoms):
        try:
            res, note = relax_with_fallbacks(
                a, labeler, fmax=float(t.fmax), max_steps=int(t.max_steps),
                relax_cell=bool(t.relax_cell), cell_filter=str(t.cell_filter),
                keep_symmetry=bool(t.keep_symmetry), rattle=float(t.rattle),
                seed=int(cfg.seed) + k)
            res.note = note
        except RelaxFailed as err:
            res = failed_result(a, str(err))
        log.info("[%d/%d] %s: %s", k + 1, len(atoms), structure_id(a, k), describe(res))
        results.append(res)
    out_dir = Path(t.output_dir)
    data = relaxed_set(results, atoms, labeler.level)
    path = store.write(out_dir / "relaxed.h5", data, config=OmegaConf.to_yaml(cfg, resolve=True))
    from ase.io import write

    write(out_dir / "relaxed.extxyz", [r.atoms for r in results])
    _table(results, atoms).to_csv(out_dir / "relax.csv", index=False)
    return path


def describe(res: RelaxResult) -> str:
    if res.note.startswith("failed"):
        return res.note
    state = "converged" if res.converged else "NOT converged"
    note = f" ({res.note})" if res.note else ""
    return (f"E = {res.energy:.6f} eV, max force {res.max_force:.4f} eV/A, {state} in "
            f"{res.n_steps} steps{note}")


def _table(results, atoms):
    import pandas as pd

    return pd.DataFrame([{"id": structure_id(a, k), "energy_eV": r.energy,
                          "max_force_eV_A": r.max_force, "converged": r.converged,
                          "n_steps": r.n_steps, "n_atoms": len(a), "note": r.note}
                         for k, (r, a) in enumerate(zip(results, atoms))])


def _plain(value):
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
