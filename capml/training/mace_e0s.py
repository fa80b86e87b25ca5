"""E0s (isolated-atom reference energies, eV) of a MACE potential: ``model.e0s``.

In these data every cell has the same Ag:S ratio (Ag24 S8 X8), so least-squares ``average``
E0s are rank deficient: only two combinations of the four elemental energies are determined,
and ``average`` is refused. ``e0s: auto`` uses, from scratch, ``isolated``: isolated-atom
energies from the reference calculator at the very settings that labeled the data (a periodic
code's labeler provides ``isolated_atom_energy``: an atom in a box), so the model learns the
cohesive energy; with a foundation, ``estimated``:

A foundation trained at another level (another code, functional or pseudopotentials) has
E0s that leave a systematic energy offset on the new data. ``estimate`` removes it: the
foundation's E0s plus the least-squares correction of its energy errors on the training
structures, as mace's ``--E0s=estimated`` does, with one difference: where the composition
matrix is rank deficient (fixed stoichiometry, as Ag24 S8 X8 here) mace's minimum-norm
correction scales with each element's count (Ag got +144 eV, S +48 eV on the demo data);
here the correction is a common shift per atom (the mean error per atom) plus the
minimum-norm remainder, which is the same fit to the data and leaves the elements'
relative E0s as the foundation had them.

mace 0.3.16 computes estimated E0s but then copies every foundation buffer of matching
shape into the new single-head model (``load_foundations_elements``), the atomic energies
included, so it trains and saves with the foundation's E0s (a 100 eV/atom offset on the
demo data). ``with_e0s`` therefore writes a copy of the foundation that holds the new E0s,
and that copy is what the trainer starts from.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from pathlib import Path

import numpy as np
import torch
from ase.data import atomic_numbers, chemical_symbols
from omegaconf import DictConfig

from capml.data import StructureSet

log = logging.getLogger(__name__)


def model_e0s(module) -> dict[int, float]:
    """{Z: E0 in eV} of a single-head MACE module."""
    values = module.atomic_energies_fn.atomic_energies.detach().cpu().numpy().reshape(-1)
    zs = [int(z) for z in module.atomic_numbers]
    if values.size != len(zs):
        raise ValueError(f"a model with {values.size // len(zs)} heads: expected one "
                         "(a multi-head model keeps its E0s per head)")
    return dict(zip(zs, map(float, values)))


def correction(counts: np.ndarray, residual_eV: np.ndarray) -> np.ndarray:
    """Per-element correction c (eV) with counts @ c ~ residual (least squares): a common
    per-atom shift plus the minimum-norm remainder. counts [N, n_el], residual [N]."""
    counts, residual = np.asarray(counts, float), np.asarray(residual_eV, float)
    shift = residual.sum() / counts.sum()
    rest = np.linalg.lstsq(counts, residual - shift * counts.sum(axis=1), rcond=None)[0]
    return shift + rest


def estimate(foundation_module, calculator, data: StructureSet) -> dict[int, float]:
    """E0s for fine-tuning ``foundation_module`` (whose ASE ``calculator`` predicts
    energies) on the labeled ``data``: foundation E0s + ``correction``."""
    counts, zs = composition_matrix(data)
    predicted = []
    for atoms in data.to_atoms():
        atoms.calc = calculator
        predicted.append(atoms.get_potential_energy())
    residual = np.asarray(data.labels["energy"], float) - np.asarray(predicted)
    start = model_e0s(foundation_module)
    missing = [z for z in zs if z not in start]
    if missing:
        raise ValueError(f"the foundation model has no E0s for Z = {missing}")
    fix = dict(zip(zs, correction(counts, residual)))
    shift = float(residual.sum() / counts.sum())
    return {z: float(start[z] + fix.get(z, shift)) for z in start}


def with_e0s(foundation_module, e0s: dict[int, float], path) -> Path:
    """Save a copy of ``foundation_module`` whose atomic energies are ``e0s`` to ``path``."""
    module = copy.deepcopy(foundation_module)
    buffer = module.atomic_energies_fn.atomic_energies
    zs = [int(z) for z in module.atomic_numbers]
    values = torch.tensor([[e0s[z] for z in zs]], dtype=buffer.dtype).reshape(buffer.shape)
    buffer.copy_(values)
    path = Path(path)
    torch.save(module, path)
    return path


def composition_matrix(data: StructureSet) -> tuple[np.ndarray, list[int]]:
    """[N, n_elements] atom counts per structure and the sorted atomic numbers."""
    zs = sorted(set(int(z) for z in data.numbers))
    off = data.offsets
    counts = np.array([[np.sum(data.numbers[off[i]:off[i + 1]] == z) for z in zs]
                       for i in range(len(data))], dtype=float)
    return counts, zs


def isolated_atom_energies(labeler, zs, data_attrs: dict | None = None) -> dict[int, float]:
    """Energies (eV) of isolated, non-periodic atoms with the reference labeler, at the
    settings recorded in the data file for that level when present (same SCF settings as
    the labels)."""
    from ase import Atoms

    recorded = ((data_attrs or {}).get("calculators") or {}).get(labeler.level)
    if hasattr(labeler, "isolated_atom_energy"):  # periodic codes: an atom in a box
        settings = dict(recorded["settings"]) if recorded else None
        return {int(z): labeler.isolated_atom_energy(int(z), settings) for z in zs}
    if recorded:
        labeler = dataclasses.replace(labeler, settings=dict(recorded["settings"]))
    labeler = dataclasses.replace(labeler, properties=("energy",))
    out = {}
    for z in zs:
        labels, _ = labeler(Atoms(numbers=[z], pbc=False))
        out[int(z)] = float(labels["energy"])
    return out


def e0s_argument(spec, data: StructureSet, foundation, labeler_factory,
                 data_attrs: dict | None = None) -> tuple[str, str, dict[int, float] | None]:
    """(value of mace's --E0s, the method used, the E0s in eV by Z when known up front)."""
    counts, zs = composition_matrix(data)
    if isinstance(spec, (dict, DictConfig)):
        e0 = {atomic_numbers[str(k)] if not str(k).isdigit() else int(k): float(v)
              for k, v in dict(spec).items()}
        missing = [chemical_symbols[z] for z in zs if z not in e0]
        if missing:
            raise ValueError(f"model.e0s lacks {missing} (the training data holds "
                             f"{[chemical_symbols[z] for z in zs]})")
        return _e0_dict(e0, zs), "given", {z: e0[z] for z in zs}
    method = str(spec)
    if method == "auto":
        method = "estimated" if foundation is not None else "isolated"
    if method in ("estimated", "foundation"):
        if foundation is None:
            raise ValueError(f"model.e0s={method} needs model.foundation (use 'isolated' or a "
                             "{element: eV} mapping to train from scratch)")
        return method, method, None
    if method == "isolated":
        labeler = labeler_factory()
        levels = set(data.meta.get("level", np.array([""]))) - {""}
        if levels and levels != {labeler.level}:
            raise ValueError(f"model.e0s=isolated computes E0s with '{labeler.level}' "
                             f"(model.e0s_calculator) but the data are labeled with "
                             f"{sorted(levels)}; give model.e0s as {{element: eV}} at that level")
        e0 = isolated_atom_energies(labeler, zs, data_attrs)
        return _e0_dict(e0, zs), f"isolated ({labeler.level})", e0
    if method == "average":
        rank = np.linalg.matrix_rank(counts)
        if rank < len(zs):
            raise ValueError(
                f"model.e0s=average is ill-conditioned here: the composition matrix of the "
                f"training data has rank {rank} for {len(zs)} elements (fixed stoichiometry), "
                "so the elemental energies are not determined. Use 'isolated', 'estimated' "
                "(with a foundation) or an {element: eV} mapping")
        return "average", "average", None
    raise ValueError(f"model.e0s='{spec}': expected auto | isolated | estimated | foundation | "
                     "average | {element: eV}")


def _e0_dict(e0: dict[int, float], zs) -> str:
    return "{" + ", ".join(f"{z}: {e0[z]!r}" for z in zs) + "}"


def estimated_e0s(foundation: str, train: StructureSet, work: Path, mcfg
                  ) -> tuple[str, str, str]:
    """(--E0s, method, foundation file to start from) for single-head fine-tuning with
    estimated E0s (``capml.training.mace_e0s``: the start file is a foundation copy that
    holds them, since mace would otherwise train with the foundation's)."""
    from capml.calculators.mlip import mlip
    from capml.models import mace as mace_models

    module = mace_models.load(foundation, dtype=mcfg.dtype)
    e0 = estimate(module, mlip(foundation, device=mcfg.device, dtype=mcfg.dtype),
                           train)
    start = with_e0s(module, e0, work / "foundation_with_e0s.model")
    log.info("E0s estimated from the foundation (eV): %s",
             {chemical_symbols[z]: round(v, 4) for z, v in e0.items()})
    return _e0_dict(e0, sorted(e0)), "estimated (foundation + common shift per atom)", str(start)


def check_saved_e0s(module, logged: dict | None, path: Path) -> None:
    """The trained single-head model holds the E0s the trainer reported using."""
    if not logged or len(getattr(module, "heads", ["Default"])) > 1:
        return
    saved = model_e0s(module)
    off = {chemical_symbols[z]: (saved.get(z), v) for z, v in logged.items()
           if saved.get(z) is None or abs(saved[z] - v) > 1e-6}
    if off:
        raise RuntimeError(f"{path}: the saved model's E0s differ from those the trainer "
                           f"reported using ((saved, reported) eV: {off})")
