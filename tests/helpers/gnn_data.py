"""Small band-gap data sets for the GNN tests, labeled with real GFN2-xTB gaps.

``labeled_file`` builds undisplaced 40-atom Ag3SBr_xI_(1-x) cells (one random
ordering per composition x = 0, 1/8, ..., 1, plus a second x = 1/2 ordering),
labels their band gaps with GFN2-xTB through ``capml.calculators.labeling``
(about 5 s a cell) and keeps the labeled file in pytest's cache directory, so
later test sessions on the same machine reuse it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[2]
SEED = 20261122
COMPOSITIONS = [k / 8 for k in range(9)] + [0.5]
_VERSION = "v1"


def unlabeled_set(seed: int = SEED):
    """StructureSet of the test cells (equilibrium, one random ordering each)."""
    from capml.data import StructureSet
    from capml.structures import System

    system = System.from_config(OmegaConf.load(ROOT / "configs" / "system" / "ag3sbri.yaml"))
    rng = np.random.default_rng(seed)
    cells = []
    for k, x in enumerate(COMPOSITIONS):
        atoms = system.random_solid_solution(x, rng)
        atoms.info = {"x": atoms.info["x"], "method": "equilibrium", "seed": seed,
                      "source": "tests", "id": f"t{k:03d}"}
        cells.append(atoms)
    return StructureSet.from_atoms(cells)


def labeled_file(cache_dir: Path, dest: Path) -> Path:
    """Copy of the GFN2-labeled test set at ``dest`` (labeled once per cache dir)."""
    from capml import data as store
    from capml.calculators.labeling import label_file

    cached = Path(cache_dir) / f"gnn_cells_{_VERSION}_{SEED}.h5"
    if not cached.exists():
        raw = Path(cache_dir) / f"gnn_cells_{_VERSION}_{SEED}.unlabeled.h5"
        store.write(raw, unlabeled_set())
        calc = OmegaConf.to_container(OmegaConf.load(ROOT / "configs" / "calculator" /
                                                     "gfn2.yaml"))
        calc["properties"] = ["band_gap"]
        tmp = cached.with_suffix(".partial.h5")
        label_file(raw, tmp, calc, n_jobs=1)
        tmp.replace(cached)
        raw.unlink()
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cached, dest)
    return dest
