"""E0s (isolated-atom reference energies, eV) of a MACE fine-tuned from a foundation model.

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

from pathlib import Path

import numpy as np
import torch

from capml.data import StructureSet


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
    from capml.training.mace_finetune import composition_matrix

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
    import copy

    module = copy.deepcopy(foundation_module)
    buffer = module.atomic_energies_fn.atomic_energies
    zs = [int(z) for z in module.atomic_numbers]
    values = torch.tensor([[e0s[z] for z in zs]], dtype=buffer.dtype).reshape(buffer.shape)
    buffer.copy_(values)
    path = Path(path)
    torch.save(module, path)
    return path
