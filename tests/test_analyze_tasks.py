"""analyze.py tasks on a real (EMT) simulate.py run: renormalised phonons, thermal gaps,
frozen Gamma modes, the demo analysis chain and its report; clear errors on bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import DEMO, compose_cfg
from helpers.systems import with_cu3x
from omegaconf import open_dict

from capml import predict_band_gap
from capml.simulation.trajectory import read_trajectory
from capml.tasks import dispatch

CKPT = DEMO / "gnn_demo.ckpt"


@pytest.fixture(scope="module")
def simulation(tmp_path_factory):
    """enumerate -> phonons -> 2 ps Langevin MD at 100 K of ordered Cu3Ag (EMT, 32 atoms)."""
    out = tmp_path_factory.mktemp("sim")
    cfg = with_cu3x(compose_cfg("simulate", [
        "experiment=demo", "calculator=emt", "task.stages.enumerate.compositions=[0.0]",
        "task.stages.phonons.mesh=[3,3,3]", "task.stages.phonons.npoints=5",
        "task.stages.md.duration_ps=2.0", "task.stages.md.stride=5",
        "task.stages.md.temperatures=[100]", "task.stages.md.max_uncertainty=null"], out))
    dispatch("simulate", cfg)
    return out


def analyze(out, *overrides):
    return with_cu3x(compose_cfg("analyze", list(overrides), out))


def test_renormalised_phonons_of_a_nearly_harmonic_crystal(simulation, tmp_path):
    """EMT Cu3Ag at 100 K is close to harmonic: every mode is fitted, the renormalised
    frequencies stay within the spectral resolution (1/1.5 ps ~ 0.7 THz) of the harmonic
    ones on average, and a stable crystal stays stable."""
    dispatch("analyze", analyze(tmp_path, "task=renormalised_phonons",
                                f"task.simulation_dir={simulation}",
                                "task.equilibration_ps=0.5", "task.mesh=[3,3,3]",
                                "task.npoints=5"))
    summary = pd.read_csv(tmp_path / "stabilisation.csv")
    assert len(summary) == 1
    row = summary.iloc[0]
    assert row["n_modes_fitted"] == 93 and row["frames_used"] == 301  # 96 - 3 translations
    assert row["verdict"] == "harmonically stable"
    modes = pd.read_csv(tmp_path / row["name"] / "modes.csv")
    fitted = modes[modes.fitted]
    assert abs(np.mean(fitted.renormalised_thz - fitted.harmonic_thz)) < 0.2
    assert np.median(np.abs(fitted.renormalised_thz - fitted.harmonic_thz)) < 0.35
    for name in ("phonopy_renormalised.yaml", "band_dos.png", "spectra.png"):
        assert (tmp_path / row["name"] / name).stat().st_size > 0


def test_thermal_gap_task_uses_the_checkpoint_and_the_first_frame(simulation, tmp_path):
    dispatch("analyze", analyze(tmp_path, "task=thermal_gap", f"task.simulation_dir={simulation}",
                                "task.equilibration_ps=0.5", "task.quantum.n_samples=4",
                                f"task.checkpoint={CKPT}"))
    res = pd.read_csv(tmp_path / "thermal_gap.csv")
    assert sorted(res["method"]) == ["md", "thermal_displacements"]
    md = res[res.method == "md"].iloc[0]
    traj = read_trajectory(next((simulation / "md").glob("*.h5")))
    assert md["gap_0K"] == pytest.approx(predict_band_gap(CKPT, [traj.atoms(0)])[0], abs=1e-6)
    assert md["n_frames"] == int((traj.times_fs >= 500).sum())
    assert md["delta_gap"] == pytest.approx(md["gap_mean"] - md["gap_0K"])
    assert md["delta_gap_sem"] > 0
    series = pd.read_csv(tmp_path / f"{traj.name}_gap_series.csv")
    assert series["band_gap"].iloc[1:].mean() == pytest.approx(md["gap_mean"], abs=1e-9)
    assert (tmp_path / "table_I.md").read_text().startswith("| x | Eg_0K | Eg_100K |")


def test_gamma_modes_task_and_a_reference_without_gaps(simulation, tmp_path):
    dispatch("analyze", analyze(tmp_path, "task=gamma_modes", f"task.simulation_dir={simulation}",
                                f"task.checkpoint={CKPT}", "task.temperatures=[0,600]"))
    summary = pd.read_csv(tmp_path / "gamma_modes_summary.csv")
    assert list(summary["temperature"]) == [0.0, 600.0]
    table = pd.read_csv(next(tmp_path.glob("*/gamma_modes.csv")))
    hot, cold = table[table.temperature == 600], table[table.temperature == 0]
    assert (hot["amplitude"].to_numpy() > cold["amplitude"].to_numpy()).all()  # 1 + 2n > 1
    with pytest.raises(ValueError, match="does not compute band_gap"):
        dispatch("analyze", analyze(tmp_path, "task=gamma_modes",
                                    f"task.simulation_dir={simulation}", f"task.checkpoint={CKPT}",
                                    "task.reference.n_modes=1",
                                    "calculator@task.reference_calculator=emt"))


def test_demo_analysis_chain_writes_one_report(simulation, tmp_path):
    cfg = analyze(tmp_path, "experiment=demo_analysis", f"task.simulation_dir={simulation}",
                  "task.stages.thermal_gap.quantum.n_samples=0",
                  "task.stages.renormalised_phonons.mesh=[3,3,3]",
                  "task.stages.renormalised_phonons.npoints=5", f"task.stages.thermal_gap.checkpoint={CKPT}",
                  f"task.stages.gamma_modes.checkpoint={CKPT}")
    results = dispatch("analyze", cfg)
    assert list(results) == ["renormalised_phonons", "thermal_gap", "gamma_modes", "report"]
    report = (tmp_path / "report" / "report.md").read_text()
    for title in ("Harmonic stability", "Renormalised phonons from MD", "Table I layout",
                  "Frozen Gamma-mode"):
        assert title in report
    figures = list((tmp_path / "report" / "figures").glob("*.png"))
    assert len(figures) >= 5 and all(f"figures/{f.name}" in report for f in figures)


def test_missing_inputs_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no MD trajectories"):
        dispatch("analyze", analyze(tmp_path, "task=thermal_gap",
                                    f"task.simulation_dir={tmp_path}", f"task.checkpoint={CKPT}"))
    with pytest.raises(FileNotFoundError, match="no such GNN checkpoint"):
        dispatch("analyze", analyze(tmp_path, "task=gamma_modes", f"task.simulation_dir={tmp_path}",
                                    "task.checkpoint=/nonexistent.ckpt"))
    cfg = analyze(tmp_path, "task=report")
    with open_dict(cfg):
        cfg.task.sources = {"run": str(tmp_path / "missing")}
    with pytest.raises(FileNotFoundError, match="task.sources.run"):
        dispatch("analyze", cfg)


def test_blown_up_trajectories_are_left_out(simulation, tmp_path):
    import shutil

    from capml.data import DataError
    from capml.simulation import trajectory as traj

    copy = tmp_path / "sim"
    shutil.copytree(simulation, copy)
    for path in (copy / "md").glob("*.h5"):
        traj.set_status(path, "blown up: atoms 0 (Cu) and 1 (Cu) 1.0 A apart")
    with pytest.raises(DataError, match="every MD trajectory blew up"):
        dispatch("analyze", analyze(tmp_path / "out", "task=thermal_gap",
                                    f"task.simulation_dir={copy}", f"task.checkpoint={CKPT}"))
    dispatch("analyze", analyze(tmp_path / "out2", "task=thermal_gap", f"task.simulation_dir={copy}",
                                f"task.checkpoint={CKPT}", "task.include_blown_up=true",
                                "task.equilibration_ps=0.5", "task.quantum.n_samples=0"))
    assert len(pd.read_csv(tmp_path / "out2" / "thermal_gap.csv")) == 1
