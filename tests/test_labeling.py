"""Reference labeling: real calculators, resumption after a kill, recorded failures."""

from __future__ import annotations

import hashlib
import json
import logging
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from helpers.labeling import EMT_CFG, copper_set
from hydra.utils import instantiate
from omegaconf import OmegaConf

from capml import data as store
from capml.calculators.labeling import label_file, pending_indices
from capml.calculators.locking import FileLocked, exclusive, lock_path
from capml.calculators.reference import LabelingFailed
from capml.data import StructureSet
from capml.tasks import dispatch


def test_emt_labels_match_direct_calls(tmp_path):
    from ase.calculators.emt import EMT

    path = store.write(tmp_path / "cu.h5", copper_set(3))
    counts = label_file(path, path, EMT_CFG)
    assert counts == {"ok": 3, "failed": 0, "skipped": 0}
    data = store.read(path)
    for atoms in data.to_atoms():
        ref = atoms.copy()
        ref.calc = EMT()
        assert atoms.get_potential_energy() == pytest.approx(ref.get_potential_energy())
        np.testing.assert_allclose(atoms.get_forces(), ref.get_forces(), atol=1e-12)
        np.testing.assert_allclose(atoms.get_stress(), ref.get_stress(), atol=1e-12)
    assert set(data.meta["level"]) == {"emt"} and set(data.meta["label_status"]) == {"ok"}
    assert (data.meta["label_seconds"] > 0).all()
    assert "emt" in store.read_attrs(path)["calculators"]


def test_output_copy_leaves_input_untouched(tmp_path):
    src = store.write(tmp_path / "in.h5", copper_set(2))
    before = src.read_bytes()
    label_file(src, tmp_path / "out.h5", EMT_CFG)
    assert src.read_bytes() == before
    assert store.read(tmp_path / "out.h5").has_label("energy").all()


def test_calculator_exception_is_recorded_and_run_goes_on(tmp_path):
    atoms = copper_set(3).to_atoms()
    atoms[1].symbols[0] = "S"  # EMT has no parameters for S: that structure fails
    path = store.write(tmp_path / "mixed.h5", StructureSet.from_atoms(atoms))
    counts = label_file(path, path, EMT_CFG)
    assert counts["ok"] == 2 and counts["failed"] == 1
    data = store.read(path)
    assert data.meta["label_status"][1].startswith("failed:") and "S" in data.meta["label_status"][1]
    assert np.isnan(data.labels["energy"][1])  # unknown, never zero
    assert list(pending_indices(path)) == []
    assert list(pending_indices(path, retry_failed=True)) == [1]


BUILDS = []


def emt_or_lj(lj: bool = False):
    """EMT (no parameters for S: fails there), or Lennard-Jones (never fails) as a fallback."""
    from ase.calculators.emt import EMT
    from ase.calculators.lj import LennardJones

    BUILDS.append("lj" if lj else "emt")
    return LennardJones() if lj else EMT()


def flaky_labeler(fallbacks=()):
    from capml.calculators.reference import Labeler

    return Labeler(level="emt", build=emt_or_lj, settings={}, properties=("energy", "forces"),
                   fallbacks=[dict(f) for f in fallbacks])


def emt_with_settings(**settings):
    """EMT under a level whose recorded settings are ``settings`` (EMT ignores them)."""
    from ase.calculators.emt import EMT

    from capml.calculators.reference import Labeler

    return Labeler(level="emt", build=lambda **_: EMT(), settings=dict(settings),
                   properties=("energy", "forces"))


def test_a_level_may_change_its_scf_controls_but_not_its_physics(tmp_path):
    """maxiter changed between runs: labeling goes on and the replaced settings stay on
    record with the rows they labeled; a changed cutoff is another level, refused before
    anything is computed or written."""
    path = store.write(tmp_path / "cu.h5", copper_set(4))
    target = {"_target_": "test_labeling.emt_with_settings", "ecut": 400}
    label_file(path, path, {**target, "maxiter": 100}, limit=2)
    label_file(path, path, {**target, "maxiter": 40}, limit=1)
    entry = store.read_attrs(path)["calculators"]["emt"]
    assert entry["settings"] == {"ecut": 400, "maxiter": 40}
    [earlier] = entry["earlier"]
    assert earlier["settings"] == {"ecut": 400, "maxiter": 100} and earlier["n_labeled"] == 2
    before = path.read_bytes()
    with pytest.raises(ValueError, match=r"cu.h5: calculator 'emt' .*ecut: 400 -> 500"):
        label_file(path, path, {**target, "ecut": 500, "maxiter": 40})
    assert path.read_bytes() == before
    label_file(path, path, {**target, "maxiter": 40})  # the same settings: nothing recorded
    assert len(store.read_attrs(path)["calculators"]["emt"]["earlier"]) == 1
    assert (store.read_meta(path, "label_status") == "ok").all()


def emt_with_setups(setups: dict, scale: float = 1.0):
    """EMT whose provenance names PAW-like ``setups`` {name: sha256}; ``scale`` stands for
    what a setup's bytes do to the physics (1: nothing)."""
    from ase.calculators.emt import EMT
    from ase.calculators.mixing import LinearCombinationCalculator

    from capml.calculators.reference import Labeler

    return Labeler(level="emt", build=lambda: LinearCombinationCalculator([EMT()], [scale]),
                   settings={}, properties=("energy", "forces"),
                   provenance={"setups": dict(setups)})


def test_regenerated_setups_are_accepted_only_when_they_reproduce_a_labeled_row(tmp_path):
    """Setups with the same names but other bytes (generated on another CPU): labeling
    recomputes the first labeled row, records the check and goes on when it agrees; when it
    does not, the error names the row and the quantity, and the file is left as it was.
    Other setup names are another level, refused outright."""
    path = store.write(tmp_path / "cu.h5", copper_set(4))
    target = "test_labeling.emt_with_setups"
    label_file(path, path, {"_target_": target, "setups": {"Cu.X": "aaa"}}, limit=2)
    before = path.read_bytes()
    with pytest.raises(ValueError, match=r"cu.h5: the PAW setups \['Cu.X'\] .* row 0 "
                                         r"\(cu0\): .*forces off by"):
        label_file(path, path, {"_target_": target, "setups": {"Cu.X": "bbb"}, "scale": 2.0})
    assert path.read_bytes() == before
    with pytest.raises(ValueError, match=r"PAW setups: \['Cu.X'\] -> \['Cu.Y'\]"):
        label_file(path, path, {"_target_": target, "setups": {"Cu.Y": "aaa"}})
    counts = label_file(path, path, {"_target_": target, "setups": {"Cu.X": "bbb"}})
    assert counts["ok"] == 2
    entry = store.read_attrs(path)["calculators"]["emt"]
    assert entry["provenance"]["setups"] == {"Cu.X": "bbb"}
    assert entry["earlier"][0]["provenance"]["setups"] == {"Cu.X": "aaa"}
    assert entry["earlier"][0]["n_labeled"] == 2
    check = entry["reproduced"]
    assert check["row"] == 0 and check["setups"] == ["Cu.X"]
    assert check["max_abs_error"]["energy"] < 1e-12 and check["max_abs_error"]["forces"] < 1e-12
    label_file(path, path, {"_target_": target, "setups": {"Cu.X": "bbb"}})  # resume: no recheck
    assert store.read_attrs(path)["calculators"]["emt"] == entry


def test_retry_untried_runs_only_the_new_fallbacks(tmp_path):
    atoms = copper_set(3).to_atoms()
    atoms[1].symbols[0] = "S"
    path = store.write(tmp_path / "mixed.h5", StructureSet.from_atoms(atoms))
    cfg = {"_target_": "test_labeling.flaky_labeler"}
    label_file(path, path, cfg)
    status = store.read_meta(path, "label_status")
    assert status[1].startswith("failed: default: ")
    # nothing new to try with the same settings
    assert list(pending_indices(path, "untried", ["default"])) == []
    BUILDS.clear()  # a fallback that fails too: both failures stay on record
    label_file(path, path, {**cfg, "fallbacks": [{"lj": False}]}, retry_failed="untried")
    assert BUILDS == ["emt"]
    assert store.read_meta(path, "label_status")[1].startswith(
        "failed: default: ") and "; {'lj': False}: " in store.read_meta(path, "label_status")[1]
    with_fallback = {**cfg, "fallbacks": [{"lj": False}, {"lj": True}]}
    BUILDS.clear()
    counts = label_file(path, path, with_fallback, retry_failed="untried")
    assert counts == {"ok": 1, "failed": 0, "skipped": 2}
    assert BUILDS == ["lj"]  # the default that failed before was not recomputed
    data = store.read(path)
    assert data.meta["label_status"][1] == "ok"
    assert data.meta["label_note"][1] == "fallback 2: {'lj': True}"
    assert np.isfinite(data.labels["energy"][1])
    with pytest.raises(ValueError, match="retry_failed='sometimes'"):
        label_file(path, path, cfg, retry_failed="sometimes")


KILLABLE = textwrap.dedent("""
    import logging, sys
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
    from capml.calculators.labeling import label_file
    cfg = {"_target_": "capml.calculators.reference.ase_calculator", "level": "emt",
           "calculator": {"_target_": "ase.calculators.emt.EMT", "_partial_": True}}
    label_file(sys.argv[1], sys.argv[1], cfg, n_jobs=int(sys.argv[2]))
""")


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_killed_run_resumes_without_loss_or_recomputation(tmp_path, n_jobs, caplog):
    path = store.write(tmp_path / "cu.h5", copper_set(40, reps=(6, 6, 6)))
    proc = subprocess.Popen([sys.executable, "-c", KILLABLE, str(path), str(n_jobs)],
                            stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:  # wait until a few structures are recorded, then SIGKILL
        if line.startswith("[6/40]"):
            # a second writer meanwhile is refused at once, naming the file and the holder
            with pytest.raises(FileLocked, match=rf"{path} is being written by pid {proc.pid} "
                                                 rf"on {socket.gethostname()} since "):
                label_file(path, path, EMT_CFG)
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    time.sleep(0.5)
    assert json.loads(lock_path(path).read_text())["pid"] == proc.pid  # left by the crash
    done = store.read(path)
    ok = done.meta["label_status"] == "ok"
    assert 6 <= ok.sum() < 40
    energies = done.labels["energy"][ok].copy()
    seconds = done.meta["label_seconds"][ok].copy()
    with caplog.at_level(logging.WARNING):
        counts = label_file(path, path, EMT_CFG)  # takes over the dead job's lock
    assert f"took over the stale lock of pid {proc.pid}" in caplog.text
    assert not lock_path(path).exists()
    assert counts["skipped"] == ok.sum() and counts["ok"] == 40 - ok.sum()
    after = store.read(path)
    assert (after.meta["label_status"] == "ok").all()
    np.testing.assert_array_equal(after.labels["energy"][ok], energies)  # not recomputed
    np.testing.assert_array_equal(after.meta["label_seconds"][ok], seconds)


def test_lock_held_elsewhere_or_unreadable_is_refused_and_file_untouched(tmp_path):
    path = store.write(tmp_path / "cu.h5", copper_set(2))
    before = path.read_bytes()
    lock_path(path).write_text(json.dumps({"pid": 4242, "host": "node042",
                                           "started": "2026-12-01T08:00:00", "command": "x"}))
    with pytest.raises(FileLocked, match=r"by pid 4242 on node042 .* delete .*cu.h5.lock"):
        label_file(path, path, EMT_CFG)  # another host: its pid cannot be checked from here
    lock_path(path).write_text("{")
    with pytest.raises(FileLocked, match="cu.h5.lock, which cannot be read"):
        label_file(path, path, EMT_CFG)
    assert path.read_bytes() == before
    lock_path(path).unlink()
    with exclusive(path, "test"):
        assert json.loads(lock_path(path).read_text())["command"] == "test"
    assert not lock_path(path).exists()


def test_rerun_with_nothing_to_do_leaves_the_file_byte_for_byte(tmp_path):
    path = store.write(tmp_path / "cu.h5", copper_set(3))
    label_file(path, path, EMT_CFG, limit=2)
    label_file(path, path, EMT_CFG)  # resume: settings attribute already there
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert label_file(path, path, EMT_CFG) == {"ok": 0, "failed": 0, "skipped": 3}
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


def test_a_run_in_which_every_structure_fails_raises_with_a_summary(tmp_path, cfg_factory):
    """EMT has no parameters for S: the Hydra task raises (the entry point exits 1)."""
    atoms = copper_set(2).to_atoms()
    for a in atoms:
        a.symbols[0] = "S"
    path = store.write(tmp_path / "s.h5", StructureSet.from_atoms(atoms))
    cfg = cfg_factory("simulate", "task=label", "calculator=emt", f"task.input={path}")
    with pytest.raises(LabelingFailed, match=r"s.h5: all 2 structures labeled in this run failed "
                                             r"with calculator level 'emt': 2 x .*S"):
        dispatch("simulate", cfg)
    mixed = copper_set(3).to_atoms()
    mixed[0].symbols[0] = "S"
    path = store.write(tmp_path / "mixed.h5", StructureSet.from_atoms(mixed))
    counts = dispatch("simulate", cfg_factory("simulate", "task=label", "calculator=emt",
                                              f"task.input={path}"))
    assert counts["ok"] == 2 and counts["failed"] == 1  # some succeed: a normal exit


def test_gfn2_labels_a_parent_cell(system):
    labeler = instantiate(OmegaConf.load("configs/calculator/gfn2.yaml"))
    labels, note = labeler(system.parent(1.0))
    assert set(labels) == {"energy", "forces", "stress", "band_gap"}
    # cubic Pm-3m cell at a symmetric geometry: no net force, isotropic stress
    np.testing.assert_allclose(labels["forces"], 0, atol=1e-4)  # SCF tolerance
    np.testing.assert_allclose(labels["stress"][:3], labels["stress"][0], atol=1e-6)
    assert 1.0 < labels["band_gap"] < 6.0 and note == ""


def test_gfn2_annealing_fallback_gives_the_labels_of_the_target_temperature(system):
    """The fallback starts the SCF at 3000 K and cools it: its labels must be the 300 K ones
    (a fallback that returned hot-smearing labels would mix two levels in one data set)."""
    labeler = instantiate(OmegaConf.load("configs/calculator/gfn2.yaml"))
    (annealing,) = labeler.fallbacks
    assert annealing["annealing"]["start_temperature"] >= 10 * labeler.settings["electronic_temperature"]
    atoms = system.parent(0.0)
    atoms.positions += np.random.default_rng(3).normal(0, 0.02, atoms.positions.shape)
    plain = labeler._compute(atoms, labeler.settings)
    annealed = labeler._compute(atoms, {**labeler.settings, **annealing})
    hot = labeler._compute(atoms, {**labeler.settings, "electronic_temperature": 3000.0})
    # measured: annealed - plain 1e-5 eV, hot - plain 1.1e-3 eV (electronic entropy)
    assert annealed["energy"] == pytest.approx(plain["energy"], abs=2e-4)  # eV per cell
    assert abs(hot["energy"] - plain["energy"]) > 5e-4
    assert annealed["band_gap"] == pytest.approx(plain["band_gap"], abs=2e-3)
    # accuracy 30 converges the density loosely: forces agree to the SCF noise (5 meV/A here)
    np.testing.assert_allclose(annealed["forces"], plain["forces"], atol=1e-2)


def test_gpaw_labels_a_small_cell():
    pytest.importorskip("gpaw")
    from ase.build import molecule

    labeler = instantiate(OmegaConf.merge(OmegaConf.load("configs/calculator/gpaw.yaml"),
                                          {"basis": "dzp"}))
    h2 = molecule("H2")
    h2.center(vacuum=3.0)
    h2.pbc = True
    labels, _ = labeler(h2)
    # capml's gap from eigenvalues/occupations equals GPAW's own HOMO-LUMO routine
    h2.calc = labeler.calculator()
    h2.get_potential_energy()
    homo, lumo = h2.calc.get_homo_lumo()
    assert labels["band_gap"] == pytest.approx(lumo - homo, abs=1e-6)
    assert 9.0 < labels["band_gap"] < 14.0  # H2: ~10 eV in PBE, more in a small LCAO basis


def test_unknown_property_is_a_clear_error():
    from hydra.errors import InstantiationException

    with pytest.raises(InstantiationException, match="unknown properties"):
        instantiate(OmegaConf.merge(OmegaConf.load("configs/calculator/gfn2.yaml"),
                                    {"properties": ["energy", "dipole"]}))
