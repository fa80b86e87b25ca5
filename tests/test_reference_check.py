"""analyze.py task=reference_check: MD frames of a potential recomputed with the reference
(EMT on copper here) and the potential's errors on them."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT
from helpers.mace import build_mace
from scipy.stats import spearmanr

from capml import data as store
from capml.analysis.reference_check import draw_frames
from capml.calculators.mlip import mlip
from capml.simulation import md
from capml.simulation.forces import make_evaluator
from capml.tasks import dispatch

TINY = dict(r_max=3.0, hidden_irreps="4x0e", num_interactions=1, correlation=1, max_ell=1)


@pytest.fixture(scope="module")
def md_run(tmp_path_factory):
    """A two-member (untrained) committee and 40 fs of MD of two Cu replicas with it."""
    root = tmp_path_factory.mktemp("refcheck")
    folder = root / "committee"
    folder.mkdir()
    for k in range(2):
        torch.save(build_mace([29], seed=k, **TINY), folder / f"member_{k}.model")
    (folder / "committee.json").write_text(json.dumps(
        {"members": ["member_0.model", "member_1.model"]}))
    reps = [md.Replica(f"cu{k}", bulk("Cu", cubic=True) * (2, 1, 1), t, seed=k,
                       meta={"x": 0.0, "source": f"cu{k}"}) for k, t in enumerate((300., 600.))]
    md.run(reps, lambda s: make_evaluator(s, lambda: mlip(folder)),
           md.LangevinSettings(n_steps=40, stride=5, min_contact=0.0, log_interval_s=3600),
           root / "md", level="mace")
    return root, folder


def check_cfg(cfg_factory, root, folder, *extra):
    return cfg_factory("analyze", "task=reference_check", "calculator=emt",
                       f"task.md_dir={root / 'md'}", f"task.model={folder}", "task.n_frames=5",
                       "task.equilibration_ps=0.01", *extra)


def test_errors_on_md_frames_equal_a_direct_computation(cfg_factory, tmp_path, md_run):
    root, folder = md_run
    summary = dispatch("analyze", check_cfg(cfg_factory, root, folder))
    frames = store.read(tmp_path / "frames.h5")
    assert len(frames) == 5 and set(frames.meta["method"]) == {"md"}
    assert set(frames.meta["label_status"]) == {"ok"} and set(frames.meta["level"]) == {"emt"}
    times = [float(s.split("@")[1].split()[0]) for s in frames.meta["source"]]
    assert min(times) >= 10.0  # after equilibration_ps = 0.01
    assert {s.split(" @")[0].rsplit("/", 1)[-1] for s in frames.meta["source"]} == {
        "cu0.h5", "cu1.h5"}  # both replicas drawn from
    ref_e, ref_f, pot_e, pot_f, spread = [], [], [], [], []
    calc = mlip(folder)
    for atoms in frames.to_atoms():
        a = atoms.copy()
        a.calc = EMT()
        ref_e.append(a.get_potential_energy() / len(a))
        ref_f.append(a.get_forces())
        a.calc = calc
        pot_e.append(a.get_potential_energy() / len(a))
        pot_f.append(a.get_forces())
        spread.append(calc.results["force_spread"].max())
    de = np.array(pot_e) - np.array(ref_e)
    df = np.concatenate(pot_f) - np.concatenate(ref_f)
    p = summary["parity"]
    assert p["energy"]["mae"] == pytest.approx(1e3 * np.mean(np.abs(de)), rel=1e-9)
    assert p["energy_relative"]["mae"] == pytest.approx(
        1e3 * np.mean(np.abs(de - de.mean())), rel=1e-9)
    assert p["energy_relative"]["offset"] == pytest.approx(1e3 * de.mean(), rel=1e-9)
    assert p["forces"]["mae"] == pytest.approx(1e3 * np.mean(np.abs(df)), rel=1e-9)
    assert p["forces"]["rmse"] == pytest.approx(1e3 * np.sqrt(np.mean(df ** 2)), rel=1e-9)
    per_atom = np.linalg.norm(df, axis=1).reshape(5, -1).max(axis=1)
    assert summary["max_force_error_eV_A"] == pytest.approx(per_atom.max(), rel=1e-9)
    table = pd.read_csv(tmp_path / "frames.csv")
    np.testing.assert_allclose(table["max_force_error_eV_A"], per_atom, rtol=1e-9)
    np.testing.assert_allclose(table["max_force_spread_eV_A"], spread, rtol=1e-9)
    assert summary["spread_error_spearman"] == pytest.approx(
        spearmanr(spread, per_atom).statistic)
    assert json.loads((tmp_path / "reference_check.json").read_text())["n_frames"] == 5
    assert (tmp_path / "parity.png").stat().st_size > 0

    seconds = frames.meta["label_seconds"].copy()  # a rerun relabels nothing
    again = dispatch("analyze", check_cfg(cfg_factory, root, folder))
    resumed = store.read(tmp_path / "frames.h5")
    np.testing.assert_array_equal(resumed.meta["label_seconds"], seconds)
    np.testing.assert_array_equal(resumed.positions, frames.positions)
    assert again["parity"] == summary["parity"]


def test_a_killed_check_resumes_its_labeling(cfg_factory, tmp_path, md_run, monkeypatch):
    root, folder = md_run
    from capml.calculators import labeling

    real, calls = labeling._record, []

    def killed_after_two(*args, **kw):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(args[1])
        real(*args, **kw)

    monkeypatch.setattr(labeling, "_record", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        dispatch("analyze", check_cfg(cfg_factory, root, folder))
    first = store.read(tmp_path / "frames.h5")
    assert (first.meta["label_status"] == "ok").sum() == 2
    monkeypatch.setattr(labeling, "_record", real)
    dispatch("analyze", check_cfg(cfg_factory, root, folder))
    done = store.read(tmp_path / "frames.h5")
    assert set(done.meta["label_status"]) == {"ok"}
    kept = first.meta["label_status"] == "ok"
    np.testing.assert_array_equal(done.meta["label_seconds"][kept], first.meta["label_seconds"][kept])


def test_draw_spreads_frames_over_replicas_after_equilibration():
    times = [np.arange(0, 100, 10.0), np.arange(0, 50, 10.0), np.arange(0, 30, 10.0)]
    picks = draw_frames(times, 6, 0.02, seed=3)
    assert len(set(picks)) == 6 and all(times[i][f] >= 20 for i, f in picks)
    assert sorted({i for i, _ in picks}) == [0, 1, 2]
    assert picks == draw_frames(times, 6, 0.02, seed=3)  # seeded
    assert len(draw_frames(times, 50, 0.02, seed=0)) == 8 + 3 + 1  # every eligible frame
    with pytest.raises(ValueError, match="equilibration_ps = 1"):
        draw_frames(times, 3, 1.0, seed=0)


def test_a_bad_md_dir_is_named(cfg_factory, tmp_path):
    cfg = cfg_factory("analyze", "task=reference_check", "calculator=emt",
                      f"task.md_dir={tmp_path / 'nowhere'}")
    with pytest.raises(FileNotFoundError, match="task.md_dir = .*nowhere: no such folder"):
        dispatch("analyze", cfg)
    (tmp_path / "empty").mkdir()
    cfg = cfg_factory("analyze", "task=reference_check", "calculator=emt",
                      f"task.md_dir={tmp_path / 'empty'}")
    with pytest.raises(FileNotFoundError, match="empty: no MD trajectories"):
        dispatch("analyze", cfg)
    assert not (tmp_path / "frames.h5").exists()
