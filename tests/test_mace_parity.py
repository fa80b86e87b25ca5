"""``analyze.py task=mlip_parity`` and its metrics (the paper's Fig. 4 and 5)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from ase.calculators.singlepoint import SinglePointCalculator
from torchmetrics.functional import mean_absolute_error, mean_squared_error, r2_score

from capml.analysis import mlip_parity as mp
from capml.calculators.mlip import mlip
from capml.data import StructureSet, write
from capml.tasks import dispatch

ELEMENTS = [16, 35, 47, 53]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two untrained float64 MACE models (different seeds) for Ag, S, Br, I."""
    from helpers.mace import build_mace

    root = tmp_path_factory.mktemp("models")
    paths = {}
    for name, seed in (("a", 1), ("b", 2)):
        paths[name] = root / f"{name}.model"
        torch.save(build_mace(ELEMENTS, r_max=4.0, hidden_irreps="8x0e", num_interactions=1,
                              correlation=2, max_ell=1, seed=seed), paths[name])
    return paths


@pytest.fixture(scope="module")
def labeled_by_a(models, system, tmp_path_factory):
    """Rattled solid-solution cells labeled by model ``a`` (the 'reference level')."""
    rng = np.random.default_rng(0)
    calc = mlip(models["a"])
    frames = []
    for k, x in enumerate((0.25, 0.5, 0.75, 1.0, 0.5)):
        atoms = system.random_solid_solution(x, rng)
        atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)
        atoms.calc = calc
        labels = dict(energy=atoms.get_potential_energy(), forces=atoms.get_forces(),
                      stress=atoms.get_stress())
        atoms.calc = SinglePointCalculator(atoms, **labels)
        atoms.info.update(id=f"p{k}", label_status="ok", level="a", method="phonon")
        frames.append(atoms)
    path = tmp_path_factory.mktemp("parity") / "ref.h5"
    write(path, StructureSet.from_atoms(frames))
    return path


def test_error_metrics_agree_with_torchmetrics():
    rng = np.random.default_rng(1)
    ref = rng.normal(size=200)
    pred = ref + rng.normal(0, 0.3, 200)
    m = mp.error_metrics(ref, pred)
    t_ref, t_pred = torch.tensor(ref), torch.tensor(pred)
    assert m["mae"] == pytest.approx(float(mean_absolute_error(t_pred, t_ref)))
    assert m["rmse"] == pytest.approx(float(mean_squared_error(t_pred, t_ref)) ** 0.5)
    assert m["r2"] == pytest.approx(float(r2_score(t_pred, t_ref)))
    assert m["max"] == pytest.approx(np.abs(pred - ref).max())
    with pytest.raises(ValueError, match="differ in size"):
        mp.error_metrics(ref, pred[:-1])
    single = mp.error_metrics([1.0], [1.5])  # no spread: R^2 undefined, NaN as in GNN metrics
    assert np.isnan(single["r2"]) and single["mae"] == pytest.approx(0.5)


def test_parity_metrics_units():
    ref = {"energy": np.array([-1.0, -1.1]), "forces": np.zeros(6), "stress": np.zeros(12)}
    pred = {"energy": ref["energy"] + 0.002, "forces": np.full(6, 0.05),
            "stress": np.full(12, 1e-4)}
    m = mp.parity_metrics(ref, pred)
    assert m["energy"]["mae"] == pytest.approx(2.0) and m["energy"]["units"] == "meV/atom"
    assert m["forces"]["mae"] == pytest.approx(50.0) and m["forces"]["units"] == "meV/A"
    assert m["stress"]["mae"] == pytest.approx(0.1) and m["stress"]["units"] == "meV/A^3"
    assert m["energy_relative"]["mae"] == pytest.approx(0.0, abs=1e-9)  # a pure offset
    assert m["energy_relative"]["offset"] == pytest.approx(2.0)


def test_parity_and_phonons_against_the_reference_level(cfg_factory, models, labeled_by_a,
                                                        tmp_path):
    """Model a is the reference level here: its errors are zero, b's are not; phonons of
    both obey the acoustic sum rule at Gamma."""
    (models["b"].with_suffix(".yaml")).write_text(yaml.safe_dump(
        {"ids": {"train": ["p0"], "val": ["p1"], "test": ["p2"]}}))
    cfg = cfg_factory(
        "analyze", "task=mlip_parity", f"task.data={labeled_by_a}",
        f"+task.models={{a: {models['a']}, b: {models['b']}}}", "~task.models.demo",
        "calculator@task.reference_calculator=mlip",
        f"task.reference_calculator.model={models['a']}", "task.phonons.npoints=11",
        "task.phonons.structures=[{name: Ag3SBr, x: 1.0, reference: null}]",
        "task.md.compositions=[1.0]", "task.md.duration_ps=0.03", "task.md.stride=5")
    result = dispatch("analyze", cfg)
    assert result["n_structures"] == 3 and set(result["ids"]) == {"p2", "p3", "p4"}
    for key in ("energy", "forces", "stress"):
        assert result["parity"]["a"][key]["mae"] < 1e-9
        assert result["parity"]["b"][key]["mae"] > 1e-3
    ph = result["phonons"]["Ag3SBr"]
    assert ph["a"]["mae"] < 1e-6 and ph["b"]["mae"] > 0.01
    assert ph["a"]["n"] == ph["b"]["n"] and ph["b"]["n"] % 15 == 0  # 5 atoms, 15 branches
    out = tmp_path
    for name in ("parity.png", "phonons_Ag3SBr.png", "metrics.json", "parity_metrics.csv",
                 "phonon_metrics.csv", "phonons_Ag3SBr_reference.yaml",
                 "phonons_Ag3SBr_b.yaml"):
        assert (out / name).is_file(), name
    from capml.simulation.phonopy_io import load_phonopy

    ph_b = load_phonopy(out / "phonons_Ag3SBr_b.yaml")
    ph_b.run_qpoints([[0, 0, 0]])
    gamma = ph_b.get_qpoints_dict()["frequencies"][0]
    assert np.sum(np.abs(gamma) < 0.05) == 3  # three acoustic modes at zero
    assert json.loads((out / "metrics.json").read_text())["models"]["b"] == str(models["b"])
    # MD survival: the same seeded replica for every model, each run to its end or failure
    from capml.simulation.trajectory import read_trajectories

    rows = result["md_survival"]
    assert [r["replica"] for r in rows["a"]] == [r["replica"] for r in rows["b"]]
    starts = []
    for name in ("a", "b"):
        (row,) = rows[name]
        (traj,) = read_trajectories(out / f"md_{name}", include_blown_up=True)
        assert row["survived_ps"] == pytest.approx(traj.times_fs[-1] / 1000.0, abs=0.006)
        assert row["status"] == "finished" or row["survived_ps"] < 0.03
        assert np.isnan(row["max_force_spread_eV_A"])  # single potentials: no spread
        starts.append(traj.positions[0])
    np.testing.assert_array_equal(starts[0], starts[1])
    assert (out / "md_survival.csv").read_text().count("\n") == 3


def test_default_config_compares_the_demo_potential_with_pbesol(cfg_factory):
    cfg = cfg_factory("analyze", "task=mlip_parity")
    assert cfg.task.models.demo.endswith("data/demo/mace_pbesol_al")
    assert cfg.task.reference_calculator.level == "gpaw-pbesol-pw"
    assert cfg.task.data.endswith("data/demo/low_pbesol.h5")
    refs = [s.reference for s in cfg.task.phonons.structures]
    assert refs and all(r.endswith(".yaml") for r in refs)
    with pytest.raises(ValueError, match="held_out"):
        from capml.tasks.mlip_parity import held_out_set

        held_out_set(cfg.task.data, {}, "test-ids", None, 0)


def test_held_out_cells_are_those_no_model_or_committee_member_saw(models, labeled_by_a,
                                                                    tmp_path):
    """A model file's sidecar lists its train/val ids; a committee folder's members train on
    redraws of one pool, so only its shared test split is held out."""
    import shutil

    from capml.tasks.mlip_parity import held_out_set

    single = tmp_path / "single.model"
    shutil.copyfile(models["a"], single)
    single.with_suffix(".yaml").write_text(yaml.safe_dump({"ids": {"train": ["p0"],
                                                                   "val": ["p2"]}}))
    folder = tmp_path / "committee"
    folder.mkdir()
    for k, name in enumerate(("a", "b")):
        shutil.copyfile(models[name], folder / f"member_{k}.model")
    (folder / "committee.json").write_text(json.dumps(
        {"members": ["member_0.model", "member_1.model"], "test_ids": ["p1", "p3"]}))

    def ids(chosen):
        return sorted(held_out_set(labeled_by_a, chosen, "unseen", None, 0).meta["id"])

    assert ids({"s": single}) == ["p1", "p3", "p4"]
    assert ids({"c": folder}) == ["p1", "p3"]
    assert ids({"s": single, "c": folder / "committee.json"}) == ["p1", "p3"]
    assert ids({"foundation": "medium-mpa-0"}) == ["p0", "p1", "p2", "p3", "p4"]
