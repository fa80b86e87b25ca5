"""The DFT demo data (GPAW PBEsol low level, GLLB-SC high level): valid files with the
stated structure counts, labels of the stated level only, the PAW setups they were made with
reproducible, and the two levels' gaps in the expected relation. The PBEsol file also holds
the frames active learning appended to it (method ``active_learning``); the sampled cells are
counted without them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from capml import data as store

STATED = {  # README, "The DFT demo data"
    "low_pbesol.h5": {"total": 405, "phonon": 324, "uniform": 72, "equilibrium": 9, "min_ok": 405,
                      "level": "gpaw-pbesol-pw", "config": "gpaw_pbesol",
                      "labels": ("energy", "forces", "stress", "band_gap")},
    "high_gllbsc.h5": {"total": 180, "phonon": 162, "uniform": 18, "equilibrium": 0, "min_ok": 180,
                       "level": "gpaw-gllbsc-pw", "config": "gpaw_gllbsc",
                       "labels": ("band_gap",)},
}


def _status(s):
    status = s.meta.get("label_status", np.full(len(s), ""))
    return status == "ok", np.char.startswith(status.astype(str), "failed: ")


@pytest.mark.parametrize("name", sorted(STATED))
def test_dft_demo_file_has_stated_counts_and_labels_of_its_level(demo_dir, name):
    s, want = store.read(demo_dir / name), STATED[name]
    appended = s.meta["method"] == "active_learning"
    assert (~appended).sum() == want["total"] and set(s.n_atoms) == {40}
    for method in ("phonon", "uniform", "equilibrium"):
        assert (s.meta["method"] == method).sum() == want[method]
    assert sorted(set(np.round(s.meta["x"][~appended], 4))) == list(np.arange(9) / 8)
    cfg = yaml.safe_load(store.read_attrs(demo_dir / name)["config"])
    # thermal displacements from the PBEsol end-member force constants
    assert cfg["system"]["force_constants"]["x0"].endswith("gpaw-pbesol-pw_x0.yaml")
    ok, failed = _status(s)
    assert ok.sum() >= want["min_ok"]
    if appended.any():  # training frames of a round, labeled before they were appended
        assert ok[appended].all() and (s.meta["round"][appended] >= 1).all()
        assert set(s.meta["split"][appended]) == {"train"}
    if ok.any():
        assert set(s.meta["level"][ok]) == {want["level"]}
    for label in ("energy", "forces", "stress", "band_gap"):
        if label in want["labels"] and ok.any():
            assert s.has_label(label)[ok].all()
        if label in s.labels:
            assert not s.has_label(label)[~ok].any()  # unknown is NaN, never zero
    if "energy" not in want["labels"]:
        assert not ("energy" in s.labels and s.has_label("energy").any())
    assert set(s.meta["split"]) == {"train", "val", "test"}


def _entry(demo_dir, name):
    recorded = store.read_attrs(demo_dir / name)["calculators"]
    recorded = json.loads(recorded) if isinstance(recorded, str) else recorded
    return recorded[STATED[name]["level"]]


@pytest.mark.parametrize("name", sorted(STATED))
def test_recorded_setups_are_the_ones_capml_generates(demo_dir, name):
    """A file's labels used the PAW setups capml's generator makes (same names, same GPAW).
    Their bytes depend on the CPU that generated them (BLAS kernels round differently), so
    every change of bytes between labeling runs carries a passed reproduction check."""
    gpaw = pytest.importorskip("gpaw")
    from capml.calculators.gpaw_dft import ensure_setups
    from capml.calculators.labeling import REPRODUCTION_TOLERANCE, regenerated_setups

    ok, _ = _status(store.read(demo_dir / name))
    if not ok.any():
        pytest.skip(f"{name}: no labels yet")
    entry = _entry(demo_dir, name)
    settings = entry["settings"]
    now = ensure_setups(["Ag", "S", "Br", "I"], settings["xc"], None, settings["setups"])
    assert sorted(entry["provenance"]["setups"]) == sorted(now)
    assert entry["provenance"]["gpaw"] == gpaw.__version__
    runs = [*entry.get("earlier", []), entry]
    for before, after in zip(runs, runs[1:]):
        if regenerated_setups(before, after):
            check = after["reproduced"]
            assert all(check["max_abs_error"][k] <= REPRODUCTION_TOLERANCE[k]
                       for k in check["max_abs_error"])


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(STATED))
def test_setups_generated_here_reproduce_a_labeled_row(demo_dir, name):
    """The file's level, rebuilt from the repository's calculator config with setups
    generated on this machine, gives back the first labeled row (~3 min of DFT)."""
    pytest.importorskip("gpaw")
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from capml.calculators.labeling import REPRODUCTION_TOLERANCE, reproduction_errors

    s = store.read(demo_dir / name)
    ok, _ = _status(s)
    if not ok.any():
        pytest.skip(f"{name}: no labels yet")
    config = OmegaConf.load(f"configs/calculator/{STATED[name]['config']}.yaml")
    labeler = instantiate(OmegaConf.merge(config, {"setups_dir": None}))
    assert labeler.level == STATED[name]["level"]
    assert json.loads(json.dumps(labeler.settings)) == _entry(demo_dir, name)["settings"]
    row = int(np.flatnonzero(ok)[0])
    labels, _ = labeler(s.subset([row]).to_atoms()[0])
    errors = reproduction_errors(s, row, labels)
    assert all(errors[k] <= REPRODUCTION_TOLERANCE[k] for k in errors), errors


def test_gllbsc_gaps_exceed_pbesol_gaps(demo_dir):
    low, high = (store.read(demo_dir / n) for n in ("low_pbesol.h5", "high_gllbsc.h5"))
    g_low, g_high = (s.labels["band_gap"][_status(s)[0]] if "band_gap" in s.labels
                     else np.array([]) for s in (low, high))
    if min(len(g_low), len(g_high)) < 5:
        pytest.skip("fewer than 5 labeled cells at a level")
    assert 0.1 < g_low.mean() < 1.5 and 0.5 < g_high.mean() < 3.0  # eV
    assert g_high.mean() > g_low.mean() + 0.2  # the discontinuity opens the gap


def test_low_and_high_dft_sets_hold_different_structures(demo_dir):
    low, high = (store.read(demo_dir / n) for n in ("low_pbesol.h5", "high_gllbsc.h5"))
    lo = low.positions.reshape(len(low), -1)
    hi = high.positions.reshape(len(high), -1)
    closest = np.min(np.abs(hi[:, None, :] - lo[None, :, :]).max(axis=2), axis=1)
    assert closest.min() > 0.01


def test_dataset_report_of_the_default_data_counts_the_dft_files(cfg_factory, demo_dir):
    import pandas as pd

    from capml.tasks import dispatch

    out = dispatch("analyze", cfg_factory("analyze", "task=dataset_report"))
    counts = pd.read_csv(out / "counts.csv")
    totals = counts.groupby("set")["total"].sum()
    sizes = {stem: len(store.read(demo_dir / f"{stem}.h5")) for stem in ("low_pbesol", "high_gllbsc")}
    assert sizes["low_pbesol"] >= 405 and sizes["high_gllbsc"] == 180
    assert totals["low_level (low_pbesol)"] == sizes["low_pbesol"]
    assert totals["high_level (high_gllbsc)"] == 180
    labels = pd.read_csv(out / "labels.csv")
    for stem, level in (("low_pbesol", "low_level"), ("high_gllbsc", "high_level")):
        ok, _ = _status(store.read(demo_dir / f"{stem}.h5"))
        row = labels[(labels["set"] == f"{level} ({stem})") & (labels["label"] == "band_gap")]
        assert int(row["n"].iloc[0]) == ok.sum()
