"""export_inputs -> (VASP on a cluster) -> calculator=vasp ingestion, matched by structure id."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import ase
import numpy as np
import pytest
from ase.io import read as ase_read
from ase.io.formats import open_with_compression

from capml import data as store
from capml.calculators.labeling import label_file
from capml.data import DataError, StructureSet
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


RUNS = Path(__file__).parent / "data" / "vasp"


def _ingest(tmp_path, runs: dict, properties, level="vasp-pbesol"):
    """Data set of the runs' own input structures (ids = keys), one run folder each, labeled
    by calculator=vasp; returns the labeled set."""
    atoms = []
    for sid, src in runs.items():
        a = ase_read(src, index=0, format="vasp-xml")
        a.calc = None
        a.info["id"] = sid
        atoms.append(a)
        folder = tmp_path / "runs" / sid
        folder.mkdir(parents=True)
        if src.suffix == ".gz":  # a gzipped run folder
            shutil.copy(src, folder / "vasprun.xml.gz")
        else:
            with open_with_compression(str(src), "rb") as fh:
                (folder / "vasprun.xml").write_bytes(fh.read())
        (folder / "capml.json").write_text(json.dumps({"id": sid, "order": list(range(len(a)))}))
    path = store.write(tmp_path / "d.h5", StructureSet.from_atoms(atoms))
    cfg = {"_target_": "capml.calculators.reference.vasp", "runs_dir": str(tmp_path / "runs"),
           "level": level, "properties": list(properties)}
    label_file(path, path, cfg)
    return store.read(path)


def test_band_structure_run_is_ingested_for_its_gap_only(tmp_path):
    runs = {"si": RUNS / "si_bands_icharg11_vasprun.xml.gz"}
    every = _ingest(tmp_path / "a", runs, ["energy", "forces", "stress", "band_gap"])
    status = every.meta["label_status"][0]
    assert status.startswith("failed: ") and "no energy, forces, stress" in status
    assert "ICHARG = 11" in status and "properties: [band_gap]" in status
    gap_only = _ingest(tmp_path / "b", runs, ["band_gap"], level="vasp-hsesol")
    assert gap_only.meta["label_status"][0] == "ok"
    assert 0.5 < gap_only.labels["band_gap"][0] < 0.7
    assert "indirect gap" in gap_only.meta["label_note"][0]


def test_metal_and_truncated_runs_on_ingestion(tmp_path):
    cut = tmp_path / "cut.xml"
    text = (RUNS / "si_supercell_vasprun.xml").read_text()
    cut.write_text(text[: text.index("</calculation>")])  # a job killed before its end
    data = _ingest(tmp_path, {"cr": RUNS / "cr_metal_vasprun.xml.xz", "si": cut},
                   ["energy", "forces", "band_gap"])
    assert data.meta["label_status"][0] == "ok" and data.labels["band_gap"][0] == 0.0
    assert data.meta["label_note"][0].startswith("metal: ")
    assert np.isfinite(data.labels["energy"][0])
    status = data.meta["label_status"][1]
    assert status.startswith("failed: ") and "si/vasprun.xml: truncated" in status
    assert np.isnan(data.labels["energy"][1])


def test_export_never_overwrites_finished_runs(cfg_factory, tmp_path, system):
    atoms = [system.random_solid_solution(0.5, np.random.default_rng(i)) for i in range(2)]
    for i, a in enumerate(atoms):
        a.info["id"] = f"s{i}"
    src = store.write(tmp_path / "in.h5", StructureSet.from_atoms(atoms))
    cfg = cfg_factory("simulate", "task=export_inputs", f"task.input={src}")
    folders = dispatch("simulate", cfg)
    assert (folders[0].parent / "folders.txt").read_text() == "s0\ns1\n"  # for a job array
    shutil.copy(RUNS / "si_supercell_vasprun.xml", folders[0] / "vasprun.xml")  # s0 has run
    (folders[0] / "INCAR").write_text("as the user ran it\n")
    dispatch("simulate", cfg)  # the same export again: the finished folder is left as is
    assert (folders[0] / "INCAR").read_text() == "as the user ran it\n"
    moved = [a.copy() for a in atoms]
    moved[0].positions[0] += 0.1
    src2 = store.write(tmp_path / "other.h5", StructureSet.from_atoms(moved))
    with pytest.raises(DataError, match=r"s0: holds VASP output \(vasprun.xml\) of another"):
        dispatch("simulate", cfg_factory("simulate", "task=export_inputs", f"task.input={src2}",
                                         f"task.output_dir={folders[0].parent}"))
    assert (folders[0] / "INCAR").read_text() == "as the user ran it\n"
