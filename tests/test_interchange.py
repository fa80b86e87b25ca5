"""VASP import against values parsed by hand from the files ase ships; extxyz round trip."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import ase
import numpy as np
import pytest

from capml import data as store
from capml.data import DataError
from capml.data.interchange import import_vasp, read_extxyz, read_vasp, write_extxyz

VASP = Path(ase.__file__).parent / "test" / "testdata" / "vasp"


def hand_parse_vasprun(path, energy_block):
    """Final energy (sigma -> 0), forces, and the band gap straight from the XML.

    ``energy_block``: where the true sigma -> 0 energy is. With PSTRESS set
    (vasprun_pstress.xml) calculation/energy holds an enthalpy (+pV), so the last SCF
    step is the reference; in the DFPT run the last SCF step is a perturbation step and
    calculation/energy is the reference.
    """
    root = ET.parse(path).getroot()
    last = root.findall("calculation")[-1]
    block = last.findall("scstep")[-1] if energy_block == "scstep" else last
    e0 = float(block.find("energy").find("i[@name='e_0_energy']").text)
    forces = np.array([[float(v) for v in r.text.split()]
                       for r in last.find("varray[@name='forces']")])
    eig, occ = [], []
    for spin in last.find("eigenvalues").find("array").find("set"):
        for kpt in spin:
            rows = np.array([[float(v) for v in r.text.split()] for r in kpt])
            eig.append(rows[:, 0])
            occ.append(rows[:, 1])
    eig, occ = np.concatenate(eig), np.concatenate(occ)
    gap = eig[occ < 0.5 * occ.max()].min() - eig[occ > 0.5 * occ.max()].max()
    return e0, forces, gap


@pytest.mark.parametrize("name, energy_block", [("vasprun_pstress.xml", "scstep"),
                                                ("vasprun_dfpt.xml", "calculation")])
def test_vasprun_matches_the_file(name, energy_block):
    e0, forces, gap = hand_parse_vasprun(VASP / name, energy_block)
    atoms = read_vasp(VASP / name, level="vasp-pbe")
    assert atoms.get_potential_energy() == pytest.approx(e0, abs=1e-8)
    np.testing.assert_allclose(atoms.get_forces(), forces, atol=1e-8)
    assert atoms.info["band_gap"] == pytest.approx(gap, abs=1e-6)
    assert atoms.info["level"] == "vasp-pbe"


def test_vasprun_stress_units_and_sign():
    # vasprun reports stress in kBar with VASP's sign (positive = compressive pressure).
    root = ET.parse(VASP / "vasprun_pstress.xml").getroot()
    last = root.findall("calculation")[-1]
    kbar = np.array([[float(v) for v in r.text.split()]
                     for r in last.find("varray[@name='stress']")])
    atoms = read_vasp(VASP / "vasprun_pstress.xml")
    expected = -kbar * 0.1 / 160.21766208  # kBar -> GPa -> eV/A^3, ASE sign
    np.testing.assert_allclose(atoms.get_stress(voigt=False), expected, atol=1e-6)


def test_outcar_energy_forces_and_spin():
    text = (VASP / "OUTCAR_example_1").read_text()
    e0 = float([ln for ln in text.splitlines() if "energy(sigma->0)" in ln][-1].split()[-1])
    atoms = read_vasp(VASP / "OUTCAR_example_1")
    assert atoms.get_potential_energy() == pytest.approx(e0, abs=1e-6)
    assert len(atoms) == 18 and np.isfinite(atoms.get_forces()).all()
    assert "band_gap" not in atoms.info  # ase reads no eigenvalues from OUTCAR: unknown, not 0


def test_import_into_store(tmp_path):
    s = import_vasp([VASP / "vasprun_pstress.xml", VASP / "OUTCAR_example_1"])
    path = store.write(tmp_path / "vasp.h5", s)
    back = store.read(path)
    assert list(back.has_label("band_gap")) == [True, False]
    assert list(back.has_label("stress")) == [True, True]


def test_missing_or_broken_vasp_output(tmp_path):
    with pytest.raises(FileNotFoundError, match="no vasprun.xml or OUTCAR"):
        read_vasp(tmp_path)
    broken = tmp_path / "vasprun.xml"
    broken.write_text("<modeling><generator>")
    with pytest.raises(DataError, match="vasprun.xml"):
        read_vasp(broken)


def test_extxyz_uses_mace_keys_and_round_trips(tmp_path, small_set):
    path = write_extxyz(tmp_path / "train.xyz", small_set)
    header = path.read_text().splitlines()[1]
    assert "REF_energy=" in header and "REF_stress=" in header and "REF_forces" in header
    back = read_extxyz(path)
    for key in ("energy", "forces", "stress", "band_gap"):
        np.testing.assert_allclose(back.labels[key], small_set.labels[key], atol=1e-7)
    np.testing.assert_allclose(back.positions, small_set.positions, atol=1e-7)
    assert list(back.meta["method"]) == list(small_set.meta["method"])
