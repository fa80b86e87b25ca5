"""How well a potential does on the structures its own MD visits: frames drawn from MD
trajectories, recomputed with the reference level, compared with the potential.

Training and test sets are drawn before any MD, so a parity on them says nothing about
the configurations the MD reaches; this check does (the domain check the paper never
makes). Pure functions: which frames to draw, the frames as a capml data set, and the
potential's errors on the labeled frames (``capml.analysis.mlip_parity`` metrics, plus per
frame the largest force error beside the committee's largest force spread).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr

from capml.analysis.mlip_parity import parity_metrics, predict, reference_values
from capml.data import StructureSet


def draw_frames(times_fs: list[np.ndarray], n: int, equilibration_ps: float, seed: int
                ) -> list[tuple[int, int]]:
    """``n`` distinct (trajectory, frame) pairs after ``equilibration_ps``, spread over the
    trajectories: each in turn gives one frame (drawn at random, seeded, without
    replacement) until ``n`` are drawn or every eligible frame is. Sorted."""
    rng = np.random.default_rng(seed)
    pools = [list(rng.permutation(np.flatnonzero(np.asarray(t) >= 1e3 * equilibration_ps)))
             for t in times_fs]
    if not sum(map(len, pools)):
        raise ValueError(f"no frame at or after equilibration_ps = {equilibration_ps} in any "
                         "of the trajectories")
    picks = []
    while len(picks) < n and any(pools):
        for i in rng.permutation(len(pools)):
            if pools[i] and len(picks) < n:
                picks.append((int(i), int(pools[i].pop())))
    return sorted(picks)


def frames_as_set(trajectories, picks, method: str = "md") -> StructureSet:
    """The frames ``picks`` = [(trajectory index, frame index)] of capml Trajectory objects
    as an unlabeled data set: ids ``<replica>@<time>fs``, ``source`` = trajectory file and
    frame time, x, the thermostat temperature, ``method`` and the MD's largest committee
    force spread ``md_max_force_spread`` (eV/A)."""
    atoms, columns = [], {"id": [], "source": [], "x": [], "temperature": [],
                          "md_max_force_spread": []}
    for i, f in picks:
        traj = trajectories[i]
        time_fs = float(traj.times_fs[f])
        atoms.append(traj.atoms(f))
        columns["id"].append(f"{traj.name}@{time_fs:.0f}fs")
        columns["source"].append(f"{traj.path} @ {time_fs:g} fs")
        columns["x"].append(traj.x)
        columns["temperature"].append(traj.temperature)
        columns["md_max_force_spread"].append(float(traj.max_force_spread[f]))
    columns["md_max_force_spread"] = np.asarray(columns["md_max_force_spread"], dtype=float)
    columns["method"] = [method] * len(picks)
    return StructureSet.from_atoms(atoms, meta=columns)


def reference_errors(data: StructureSet, calc) -> tuple[dict, list[dict], dict]:
    """The potential ``calc`` against the reference labels of ``data`` (energy, forces,
    stress; rows without all three are left out by the caller).

    Returns (summary, per-frame rows, predictions). The summary holds
    ``mlip_parity.parity_metrics`` (meV/atom, meV/A, meV/A^3; ``energy`` raw and
    ``energy_relative`` with the mean offset removed, as a potential fine-tuned from another
    level may carry a constant shift), ``max_force_error_eV_A`` over all atoms and, for a
    committee, the Spearman rank correlation of the per-frame largest force spread with the
    per-frame largest force error. Force errors per atom are the length of F_pred - F_ref
    (eV/A), the quantity the committee's per-atom force spread estimates."""
    ref = reference_values(data)
    pred = predict(calc, data.to_atoms())
    metrics = parity_metrics(ref, pred)
    spreads = [_max_force_spread(a, calc) for a in data.to_atoms()]
    err = np.linalg.norm((pred["forces"] - ref["forces"]).reshape(-1, 3), axis=1)
    off = data.offsets
    rows = []
    for k in range(len(data)):
        atoms_err = err[off[k]:off[k + 1]]
        rows.append({"id": str(data.meta["id"][k]), "source": str(data.meta["source"][k]),
                     "energy_error_meV_atom": 1e3 * (pred["energy"][k] - ref["energy"][k]),
                     "force_mae_meV_A": 1e3 * float(np.mean(np.abs(
                         (pred["forces"] - ref["forces"])[3 * off[k]:3 * off[k + 1]]))),
                     "max_force_error_eV_A": float(atoms_err.max()),
                     "max_force_spread_eV_A": spreads[k]})
    summary = {"n_frames": len(data), "parity": metrics,
               "max_force_error_eV_A": float(err.max()) if err.size else float("nan"),
               "spread_error_spearman": spread_error_correlation(rows)}
    return summary, rows, pred


def spread_error_correlation(rows: list[dict]) -> float:
    """Spearman rank correlation of the per-frame largest force spread with the per-frame
    largest force error; NaN without a committee or with fewer than three frames."""
    spread = np.array([r["max_force_spread_eV_A"] for r in rows], dtype=float)
    error = np.array([r["max_force_error_eV_A"] for r in rows], dtype=float)
    if len(rows) < 3 or not np.isfinite(spread).all():
        return float("nan")
    return float(spearmanr(spread, error).statistic)


def _max_force_spread(atoms, calc) -> float:
    from capml.calculators.mlip import spread_of

    return spread_of(atoms, calc)["max_force_spread"]
