"""``analyze.py task=gamma_modes``: band-gap changes under frozen Gamma phonons (Fig. 8).

For every structure with harmonic force constants in ``task.phonons_dir``
(``<id>/phonopy.yaml``; ``task.structures`` picks ids), each Gamma mode is
frozen in at its thermal amplitude at each of ``task.temperatures`` (both signs,
degenerate subspaces together; capml.analysis.gamma_modes) and the GNN gap
(``task.checkpoint``) of every distorted cell is compared with the undistorted
one. With ``task.reference.n_modes > 0`` the modes with the largest |Delta Eg| at
the highest temperature are recomputed with ``task.reference_calculator`` (GPAW GLLB-SC
by default: the demo GNN's high level), the analogue of the paper's DFT check (Fig. 8d).

Outputs per structure: ``<id>/gamma_modes.csv`` (all temperatures),
``<id>/gamma_modes.png``, and ``<id>/reference_check.csv`` when asked.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from hydra.utils import instantiate
from omegaconf import DictConfig

from capml.analysis import gamma_modes as gm
from capml.analysis import nmd
from capml.predict import load_predictor
from capml.simulation.phonopy_io import load_phonopy, supercell_atoms

log = logging.getLogger(__name__)


def structure_dirs(phonons_dir, structures) -> list[Path]:
    root = Path(phonons_dir)
    found = sorted(p.parent for p in root.glob("*/phonopy.yaml"))
    if structures is not None:
        wanted = [str(s) for s in structures]
        missing = [s for s in wanted if not (root / s / "phonopy.yaml").exists()]
        if missing:
            raise FileNotFoundError(f"{root}: no <id>/phonopy.yaml for task.structures "
                                    f"{missing} (have {[p.name for p in found]})")
        found = [root / s for s in wanted]
    if not found:
        raise FileNotFoundError(f"{root}: no <id>/phonopy.yaml; run `python simulate.py "
                                "task=phonons` first")
    return found


def reference_check(atoms, modes, table: pd.DataFrame, temperature: float, n_modes: int,
                    labeler) -> pd.DataFrame:
    """GNN vs reference gap for the ``n_modes`` modes with the largest |Delta Eg|
    (+ distortion) and for the undistorted cell."""
    top = table.reindex(table["mode_delta"].abs().sort_values(ascending=False).index)
    top = top.head(n_modes)
    cells, rows = [atoms.copy()], [{"mode": -1, "frequency": np.nan,
                                    "gnn_gap": table["gap_0"].iloc[0]}]
    for _, r in top.iterrows():
        new = atoms.copy()
        new.positions += gm.displacement(modes, int(r["mode"]), r["amplitude"])
        cells.append(new)
        rows.append({"mode": int(r["mode"]), "frequency": r["frequency"],
                     "gnn_gap": r["gap_plus"]})
    for row, cell in zip(rows, cells):
        labels, note = labeler(cell)
        row["reference_gap"] = labels["band_gap"]
        row["reference_note"] = note
    out = pd.DataFrame(rows)
    out["temperature"] = temperature
    out["gnn_change"] = out["gnn_gap"] - out["gnn_gap"].iloc[0]
    out["reference_change"] = out["reference_gap"] - out["reference_gap"].iloc[0]
    return out


def run(cfg: DictConfig) -> Path:
    t = cfg.task
    out = Path(t.output_dir)
    predictor = load_predictor(t.checkpoint)
    temperatures = [float(T) for T in t.temperatures]
    labeler = None
    if int(t.reference.n_modes) > 0:
        labeler = instantiate(t.reference_calculator)
        if "band_gap" not in labeler.properties:
            raise ValueError(f"task.reference_calculator ({labeler.level}) does not compute "
                             f"band_gap (its properties: {list(labeler.properties)}); use e.g. "
                             "calculator@task.reference_calculator=gpaw_gllbsc")
    summary = []
    for folder in structure_dirs(t.phonons_dir, t.structures):
        phonon = load_phonopy(folder / "phonopy.yaml")
        atoms = supercell_atoms(phonon)
        modes = nmd.modes_from_phonopy(phonon)
        tables = {T: gm.gap_changes(atoms, modes, T, predictor.predict,
                                    min_frequency=float(t.min_frequency),
                                    degeneracy_thz=float(t.degeneracy_thz))
                  for T in temperatures}
        sub = out / folder.name
        sub.mkdir(parents=True, exist_ok=True)
        pd.concat([tab.assign(temperature=T) for T, tab in tables.items()]).to_csv(
            sub / "gamma_modes.csv", index=False)
        gm.plot(tables, sub / "gamma_modes.png", title=folder.name)
        for T, tab in tables.items():
            worst = tab.loc[tab["delta_gap"].abs().idxmax()]
            summary.append({"id": folder.name, "temperature": T, "gap_0": tab["gap_0"].iloc[0],
                            "sum_delta_gap": tab["mode_delta"].sum(),
                            "largest_mode_thz": worst["frequency"],
                            "largest_delta_gap": worst["delta_gap"],
                            "largest_species": worst["dominant_species"]})
            log.info("%s at %g K: sum of single-mode gap changes %+.3f eV; largest %+.4f eV "
                     "(mode at %.2f THz, mostly %s)", folder.name, T,
                     summary[-1]["sum_delta_gap"], worst["delta_gap"], worst["frequency"],
                     worst["dominant_species"])
        if labeler is not None:
            hot = max(temperatures)
            check = reference_check(atoms, modes, tables[hot], hot, int(t.reference.n_modes),
                                    labeler)
            check.to_csv(sub / "reference_check.csv", index=False)
            log.info("%s: GNN vs %s gap changes (eV):\n%s", folder.name, labeler.level,
                     check[["mode", "frequency", "gnn_change", "reference_change"]]
                     .to_string(index=False))
    table = pd.DataFrame(summary)
    table.to_csv(out / "gamma_modes_summary.csv", index=False)
    return out / "gamma_modes_summary.csv"
