"""export_inputs -> (VASP on a cluster) -> calculator=vasp ingestion, matched by structure id."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import ase
import numpy as np
from ase.io import read as ase_read

from capml import data as store
from capml.calculators.labeling import label_file
from capml.data import StructureSet
from capml.tasks import dispatch
from capml.tasks.export_inputs import kpoint_grid

VASP = Path(ase.__file__).parent / "test" / "testdata" / "vasp"


def test_export_inputs_writes_grouped_poscar_and_order(cfg_factory, tmp_path, system):
    atoms = [system.random_solid_solution(0.5, np.random.default_rng(i)) for i in range(2)]
    for i, a in enumerate(atoms):
        a.info["id"] = f"s{i}"
    src = store.write(tmp_path / "in.h5", StructureSet.from_atoms(atoms))
    cfg = cfg_factory("simulate", "task=export_inputs", f"task.input={src}")
    folders = dispatch("simulate", cfg)
    assert [f.name for f in folders] == ["s0", "s1"]
    meta = json.loads((folders[0] / "capml.json").read_text())
    poscar = ase_read(folders[0] / "POSCAR")
    assert meta["potcar_order"] == list(dict.fromkeys(poscar.get_chemical_symbols()))
    inverse = np.argsort(meta["order"])
    np.testing.assert_allclose(poscar.positions[inverse], atoms[0].positions, atol=1e-6)
    assert (folders[0] / "KPOINTS").read_text().splitlines()[3] == "6 6 6"
    assert "ENCUT = 550" in (folders[0] / "INCAR").read_text()


def test_kpoint_grid_matches_paper_density():
    assert kpoint_grid(4.8 * np.eye(3), 57.6) == [12, 12, 12]


def _fake_run(runs, sid, vasprun, order):
    folder = runs / sid
    folder.mkdir(parents=True)
    shutil.copy(vasprun, folder / "vasprun.xml")
    (folder / "capml.json").write_text(json.dumps({"id": sid, "order": order}))


def test_vasp_ingestion_maps_atoms_back_and_records_failures(tmp_path):
    nacl = ase_read(VASP / "vasprun_dfpt.xml", index=-1)
    ref_forces = nacl.get_forces().copy()
    # The data set holds the atoms in reversed order; the run holds them sorted.
    order = list(range(len(nacl)))[::-1]
    mine = nacl[order]
    mine.calc = None
    mine.info["id"] = "nacl"
    other = mine.copy()
    other.info["id"] = "missing"
    moved = mine.copy()
    moved.positions[0] += 0.1
    moved.info["id"] = "moved"
    runs = tmp_path / "runs"
    _fake_run(runs, "nacl", VASP / "vasprun_dfpt.xml", np.argsort(order).tolist())
    _fake_run(runs, "moved", VASP / "vasprun_dfpt.xml", np.argsort(order).tolist())
    path = store.write(tmp_path / "d.h5", StructureSet.from_atoms([mine, other, moved]))
    cfg = {"_target_": "capml.calculators.reference.vasp", "runs_dir": str(runs),
           "level": "vasp-pbe"}
    counts = label_file(path, path, cfg)
    assert counts["ok"] == 1 and counts["failed"] == 2
    data = store.read(path)
    got = data.subset([0]).to_atoms()[0]
    np.testing.assert_allclose(got.get_forces(), ref_forces[order], atol=1e-10)
    assert got.info["band_gap"] > 0 and data.meta["level"][0] == "vasp-pbe"
    assert "no exported VASP run for id 'missing'" in data.meta["label_status"][1]
    assert "differs" in data.meta["label_status"][2]
