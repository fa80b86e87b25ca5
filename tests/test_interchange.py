"""VASP import against values parsed by hand from real runs (the files ase ships and those
of tests/data/vasp, see its SOURCES.md); what is refused and why; extxyz round trip."""

from __future__ import annotations

import gzip
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import ase
import numpy as np
import pytest
from ase.io import read as ase_read
from ase.io.formats import open_with_compression

from capml import data as store
from capml.calculators.band_gap import METAL_TOLERANCE, band_edges, gap_from_eigenvalues
from capml.data import DataError
from capml.data.interchange import import_vasp, read_extxyz, read_vasp, write_extxyz
from capml.data.vasp_run import VaspRunRejected

VASP = Path(ase.__file__).parent / "test" / "testdata" / "vasp"
RUNS = Path(__file__).parent / "data" / "vasp"


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
    with pytest.raises(FileNotFoundError, match="no vasprun.xml or .*OUTCAR"):
        read_vasp(tmp_path)
    broken = tmp_path / "vasprun.xml"
    broken.write_text("<modeling><generator>")
    with pytest.raises(VaspRunRejected, match="vasprun.xml: truncated .*did not finish"):
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


# ------------------------------------------------------------ real runs of tests/data/vasp
def hand_parse_edges(path):
    """Eigenvalues [spin, k, band], occupations and k-points straight from a vasprun.xml."""
    with open_with_compression(str(path), "rb") as fh:
        root = ET.parse(fh).getroot()
    kpts = np.array([[float(v) for v in r.text.split()]
                     for r in root.find("kpoints/varray[@name='kpointlist']")])
    spins = root.findall("calculation")[-1].find("eigenvalues/array/set")
    rows = np.array([[[[float(v) for v in r.text.split()] for r in k] for k in s] for s in spins])
    return rows[..., 0], rows[..., 1], kpts


def test_semiconductor_gap_is_indirect_with_band_edge_kpoints():
    """Si supercell single point (phonopy example): clean 0/1 occupations; the gap is the
    lowest empty minus the highest filled level over all k, and VBM/CBM sit at different k."""
    path = RUNS / "si_supercell_vasprun.xml"
    e, f, kpts = hand_parse_edges(path)
    assert set(np.unique(f)) == {0.0, 1.0}
    vbm, cbm = e[f == 1].max(), e[f == 0].min()
    atoms = read_vasp(path, level="vasp-pbe")
    edges = atoms.info["band_edges"]
    assert atoms.info["band_gap"] == pytest.approx(cbm - vbm, abs=1e-9)
    assert 0.4 < atoms.info["band_gap"] < 0.8  # PBE silicon: ~0.6 eV, indirect
    assert not edges.direct and not edges.metal
    assert edges.direct_gap_eV > edges.gap_eV
    k_vbm = kpts[np.argwhere(e == vbm)[0][1]]
    k_cbm = kpts[np.argwhere(e == cbm)[0][1]]
    np.testing.assert_allclose(edges.vbm_k, k_vbm)
    np.testing.assert_allclose(edges.cbm_k, k_cbm)
    assert "indirect gap" in atoms.info["label_note"] and np.isfinite(atoms.get_potential_energy())
    nacl = read_vasp(RUNS / "nacl_supercell_vasprun.xml")
    assert nacl.info["band_edges"].direct and nacl.info["label_note"].startswith("direct gap")
    assert nacl.info["band_edges"].direct_gap_eV == pytest.approx(nacl.info["band_gap"])


def test_band_structure_run_gives_its_gap_only():
    """ICHARG = 11 line-mode Si band structure (custodian): no energy, forces or stress; the
    CBM lies on Gamma-X at ~83 % of the way to X (0.5, 0, 0.5), the textbook silicon value."""
    atoms = read_vasp(RUNS / "si_bands_icharg11_vasprun.xml.gz")
    assert atoms.calc is None
    assert "ICHARG = 11" in atoms.info["label_note"] and "band gap only" in atoms.info["label_note"]
    edges = atoms.info["band_edges"]
    assert not edges.direct and edges.vbm_k == (0.0, 0.0, 0.0)
    assert edges.cbm_k[1] == 0 and edges.cbm_k[0] == edges.cbm_k[2]
    assert 0.78 < edges.cbm_k[0] / 0.5 < 0.88
    row = import_vasp([RUNS / "si_bands_icharg11_vasprun.xml.gz"])
    assert np.isnan(row.labels["energy"][0]) if "energy" in row.labels else True
    assert row.labels["band_gap"][0] == pytest.approx(edges.gap_eV)


@pytest.mark.parametrize("name, old_rule_gap", [("cr_metal_vasprun.xml.xz", True),
                                                ("al_spin_metal_vasprun.xml.gz", False)])
def test_smeared_metals_get_no_false_gap(name, old_rule_gap):
    """Cr (Gaussian smearing 0.1 eV) and spin-polarised Al (tetrahedra): partly filled levels
    at the Fermi level. The half-occupation rule gives Cr a gap; capml gives 0, metal."""
    e, f, _ = hand_parse_edges(RUNS / name)
    assert (gap_from_eigenvalues(e, f) > 0.01) == old_rule_gap  # the false gap of the old rule
    atoms = read_vasp(RUNS / name)
    assert atoms.info["band_gap"] == 0.0 and atoms.info["band_edges"].metal
    partial = ((f > METAL_TOLERANCE) & (f < 1 - METAL_TOLERANCE)).sum()
    assert partial > 10 and f"metal: {partial} levels partly occupied" in atoms.info["label_note"]
    assert "Fermi level" in atoms.info["label_note"]


def test_spin_polarised_gap_uses_both_channels():
    """Ferromagnetic FeO relaxation (custodian): 4 more up than down electrons; the gap is
    the lowest empty level of either channel minus the highest filled one of either (here
    both edges are majority-spin levels: 1.80 eV, against 3.24 eV in the minority channel)."""
    path = RUNS / "feo_spin_relax_vasprun.xml.xz"
    e, f, _ = hand_parse_edges(path)
    assert f[0].sum() - f[1].sum() == pytest.approx(4.0)
    per_channel = [e[s][f[s] == 0].min() - e[s][f[s] == 1].max() for s in (0, 1)]
    atoms = read_vasp(path)
    expected = e[f == 0].min() - e[f == 1].max()
    assert atoms.info["band_gap"] == pytest.approx(expected, abs=1e-9)
    assert atoms.info["band_gap"] == pytest.approx(min(per_channel))
    assert per_channel[1] - per_channel[0] > 1.0
    assert atoms.info["band_edges"].vbm_index[0] == atoms.info["band_edges"].cbm_index[0] == 0


def test_wide_smearing_tails_keep_the_gap_and_say_so():
    """HSE Cs2SnI6 with SIGMA = 0.2 eV (sumo): five conduction-band-minimum levels hold
    1-2 % of an electron (smearing tails: no level near half filling, the same number of
    filled bands at every k-point). The gap stays, with a note; it is not a metal."""
    path = RUNS / "cs2sni6_hse_sigma0.2_vasprun.xml.gz"
    e, f, _ = hand_parse_edges(path)
    assert ((f > 0.01) & (f < 0.99)).sum() == 5 and ((f > 0.1) & (f < 0.9)).sum() == 0
    atoms = read_vasp(path)
    assert atoms.info["band_gap"] == pytest.approx(e[f < 0.5].min() - e[f > 0.5].max())
    assert 0.6 < atoms.info["band_gap"] < 0.8 and atoms.info["band_edges"].direct  # Gamma
    assert "across smearing tails: 5 band-edge levels up to 0.017" in atoms.info["label_note"]
    strict = band_edges(e, f, tolerance=0.001)  # tails count at any tolerance: still a gap
    assert strict.gap_eV == atoms.info["band_gap"] and strict.n_partial > 5


def test_metal_is_recognised_even_where_the_half_rule_found_no_gap():
    """Both metal signatures on real runs: filled-band counts that change between k-points
    (bands crossing E_F), and levels near half filling."""
    for name in ("cr_metal_vasprun.xml.xz", "al_spin_metal_vasprun.xml.gz",
                 "relax_unconverged_vasprun.xml.xz"):
        e, f, _ = hand_parse_edges(RUNS / name)
        counts = (f > 0.5).sum(axis=2)
        assert any(len(set(c)) > 1 for c in counts) and ((f > 0.1) & (f < 0.9)).any()
        assert band_edges(e, f).metal


@pytest.mark.parametrize("name", ["feo_spin_relax_cut_at_step15_vasprun.xml.xz",
                                  "truncated_after_parameters_vasprun.xml"])
def test_truncated_runs_are_refused(name):
    with pytest.raises(VaspRunRejected, match=f"{name}: truncated .*did not finish"):
        read_vasp(RUNS / name)


def test_truncated_relaxation_would_have_given_a_wrong_energy():
    """What the refusal prevents: ase reads the last complete step of the cut file, an
    energy 1.1 eV above the finished run's."""
    cut = ase_read(RUNS / "feo_spin_relax_cut_at_step15_vasprun.xml.xz", index=-1,
                   format="vasp-xml")
    full = read_vasp(RUNS / "feo_spin_relax_vasprun.xml.xz")
    assert cut.get_potential_energy() - full.get_potential_energy() > 1.0


def test_unconverged_scf_is_refused():
    with pytest.raises(VaspRunRejected, match="SCF not converged: .*NELM = 100"):
        read_vasp(RUNS / "scf_unconverged_vasprun.xml.xz")


def test_unconverged_relaxation_is_noted_or_refused_on_request():
    path = RUNS / "relax_unconverged_vasprun.xml.xz"
    atoms = read_vasp(path)
    assert "relaxation not converged: stopped at NSW = 2" in atoms.info["label_note"]
    with pytest.raises(VaspRunRejected, match="relaxation not converged"):
        read_vasp(path, require_relaxed=True)
    assert read_vasp(RUNS / "feo_spin_relax_vasprun.xml.xz", require_relaxed=True)


def test_format_comes_from_the_content_not_the_name(tmp_path):
    src = RUNS / "si_supercell_vasprun.xml"
    odd = tmp_path / "run_hse.xml"
    shutil.copy(src, odd)
    packed = tmp_path / "si.data.gz"
    packed.write_bytes(gzip.compress(src.read_bytes()))
    ref = read_vasp(src)
    for path in (odd, packed):
        atoms = read_vasp(path)
        assert atoms.get_potential_energy() == ref.get_potential_energy()
        assert atoms.info["band_gap"] == ref.info["band_gap"]


def test_files_that_are_not_vasp_output_are_named(tmp_path):
    with pytest.raises(DataError, match=r"exciting_input.xml: an XML file but not a VASP "
                                        r"vasprun.xml \(root element <input>"):
        read_vasp(RUNS / "exciting_input.xml")
    empty = tmp_path / "vasprun.xml"
    empty.write_text("")
    with pytest.raises(DataError, match="vasprun.xml: neither a vasprun.xml nor an OUTCAR"):
        read_vasp(empty)
    cut = tmp_path / "OUTCAR"
    text = (VASP / "OUTCAR_example_1").read_text()
    cut.write_text(text[:len(text) // 2])
    with pytest.raises(VaspRunRejected, match="OUTCAR: OUTCAR without VASP's closing"):
        read_vasp(cut)


def test_run_without_empty_bands_has_no_gap_and_says_why(tmp_path):
    """The Si run with its empty bands removed (as NBANDS = occupied bands would give)."""
    text = (RUNS / "si_supercell_vasprun.xml").read_text()
    rows = re.compile(r"(<r>\s*\S+\s+0\.0000\s*</r>\n)")
    path = tmp_path / "vasprun.xml"
    path.write_text(rows.sub("", text))
    atoms = read_vasp(path)
    assert "band_gap" not in atoms.info
    assert "band gap unknown: cannot define a gap: every level is occupied" in (
        atoms.info["label_note"])
    assert np.isfinite(atoms.get_potential_energy())


def test_batch_import_records_each_bad_run_and_keeps_the_good(tmp_path, caplog):
    paths = [RUNS / "si_supercell_vasprun.xml", tmp_path / "missing", RUNS / "exciting_input.xml",
             RUNS / "feo_spin_relax_cut_at_step15_vasprun.xml.xz",
             RUNS / "scf_unconverged_vasprun.xml.xz", RUNS / "cr_metal_vasprun.xml.xz"]
    s = import_vasp(paths, level="vasp-pbe")
    status = list(s.meta["label_status"])
    assert len(s) == 4 and status[0] == "ok" and status[3] == "ok"
    assert status[1].startswith("failed: ") and "cut_at_step15" in status[1]
    assert "did not finish" in status[1] and "NELM = 100" in status[2]
    assert np.isnan(s.labels["energy"][1:3]).all() and np.isnan(s.labels["band_gap"][1:3]).all()
    assert s.labels["band_gap"][3] == 0.0 and "metal" in s.meta["label_note"][3]
    assert "missing" in caplog.text and "exciting_input.xml" in caplog.text
    back = store.read(store.write(tmp_path / "runs.h5", s))
    assert list(back.meta["label_status"]) == status
    with pytest.raises(DataError, match="no structure in any"):
        import_vasp([tmp_path / "missing"])


def test_outcar_takes_its_gap_from_the_vasprun_beside_it(tmp_path):
    shutil.copy(VASP / "OUTCAR_example_1", tmp_path / "OUTCAR")
    (tmp_path / "vasprun.xml").write_text("<?xml version='1.0'?><modeling><generator>")
    atoms = read_vasp(tmp_path / "OUTCAR")  # the OUTCAR is fine, its vasprun.xml cut short
    assert "band_gap" not in atoms.info and np.isfinite(atoms.get_potential_energy())
    assert "band gap unknown: " in atoms.info["label_note"] and "did not finish" in (
        atoms.info["label_note"])
