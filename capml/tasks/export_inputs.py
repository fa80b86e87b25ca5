"""``simulate.py task=export_inputs``: VASP input folders for a cluster, one per structure.

Each ``<output_dir>/<id>/`` gets POSCAR (atoms grouped by species, as VASP needs),
INCAR and KPOINTS from the task config, and ``capml.json`` with the structure id and
the atom order back to the data set's (``calculator=vasp`` uses it to ingest the
results). POTCARs are licensed: concatenate your own in the POSCAR species order
(listed in ``capml.json``). ``folders.txt`` lists the folders, one a line, for a
job array (``sed -n "${SLURM_ARRAY_TASK_ID}p" folders.txt``). A folder that already
holds VASP output is never rewritten: it is left as is when its POSCAR is the one
capml would write (rerunning the export is safe), refused otherwise.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import numpy as np
from ase.io import write as ase_write
from omegaconf import DictConfig, OmegaConf

from capml import data as store
from capml.data.interchange import VASP_NAMES
from capml.data.structure_set import DataError

log = logging.getLogger(__name__)


def kpoint_grid(cell: np.ndarray, density: float) -> list[int]:
    """Monkhorst-Pack grid with at least ``density`` points per A^-1 of reciprocal length
    (k * |b_i| / 2pi): 12 per 4.8 A cubic cell -> density = 12 * 4.8 = 57.6."""
    recip = np.linalg.norm(np.linalg.inv(cell).T, axis=1)  # 1/A, without 2pi
    return [max(1, int(np.ceil(density * r))) for r in recip]


def export(data, output_dir, incar: dict, kpoint_density: float) -> list[Path]:
    out = Path(output_dir)
    folders = []
    for atoms in data.to_atoms():
        sid = atoms.info.get("id") or ""
        if not sid:
            raise ValueError("structures need a meta 'id' to be exported (generate sets it)")
        order = np.argsort(atoms.numbers, kind="stable")
        sorted_atoms = atoms[order]
        sorted_atoms.calc = None
        folder = out / sid
        folders.append(folder)
        poscar = _poscar_text(sorted_atoms)
        if _has_results(folder, poscar):
            continue
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "POSCAR").write_text(poscar)
        (folder / "INCAR").write_text("".join(f"{k} = {_vasp_value(v)}\n"
                                              for k, v in incar.items()))
        grid = kpoint_grid(atoms.cell.array, kpoint_density)
        (folder / "KPOINTS").write_text(f"capml\n0\nGamma\n{grid[0]} {grid[1]} {grid[2]}\n0 0 0\n")
        species = list(dict.fromkeys(sorted_atoms.get_chemical_symbols()))
        (folder / "capml.json").write_text(json.dumps({"id": sid, "order": order.tolist(),
                                                       "potcar_order": species}))
    out.mkdir(parents=True, exist_ok=True)
    (out / "folders.txt").write_text("".join(f"{f.name}\n" for f in folders))
    return folders


def _poscar_text(atoms) -> str:
    buffer = io.StringIO()
    ase_write(buffer, atoms, format="vasp", direct=True)
    return buffer.getvalue()


def _has_results(folder: Path, poscar: str) -> bool:
    """True when ``folder`` holds VASP output for this POSCAR; raises for another one."""
    outputs = [p.name for p in folder.glob("*") if p.name in VASP_NAMES]
    if not outputs:
        return False
    if (folder / "POSCAR").exists() and (folder / "POSCAR").read_text() == poscar:
        return True
    raise DataError(f"{folder}: holds VASP output ({', '.join(outputs)}) of another structure "
                    "than the one exported now; move it away or export to a new output_dir")


def _vasp_value(v) -> str:
    if isinstance(v, bool):
        return ".TRUE." if v else ".FALSE."
    return str(v)


def run(cfg: DictConfig) -> list[Path]:
    t = cfg.task
    data = store.read(t.input)
    folders = export(data, t.output_dir, OmegaConf.to_container(t.incar, resolve=True),
                     float(t.kpoint_density))
    log.info("wrote %d VASP input folders under %s", len(folders), t.output_dir)
    return folders
