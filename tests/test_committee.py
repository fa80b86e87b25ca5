"""Committee uncertainty of the MACE potential: members' mean and spread on the ASE and the
batched path, the spread as a domain detector, and MD stopping when it leaves the domain."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT
from helpers.mace import build_mace, fit

from capml import data as store
from capml.calculators.mlip import mlip
from capml.simulation import md
from capml.simulation import trajectory as traj
from capml.simulation.forces import committee_spread, make_evaluator

TINY = dict(r_max=3.0, hidden_irreps="4x0e", num_interactions=1, correlation=1, max_ell=1)


def save_committee(folder, models):
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"member_{k}.model" for k in range(len(models))]
    for name, model in zip(names, models):
        torch.save(model, folder / name)
    (folder / "committee.json").write_text(json.dumps({"members": names}))
    return folder


def copper(rattle=0.0, a=3.61, seed=0):
    atoms = bulk("Cu", "fcc", a=a, cubic=True)
    atoms.positions += np.random.default_rng(seed).normal(0, rattle, atoms.positions.shape)
    return atoms


def evaluate(atoms, calculator):
    atoms = atoms.copy()
    atoms.calc = calculator
    return atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()


@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    """A committee of three untrained members (seeds 0, 1, 2) and the members alone."""
    folder = tmp_path_factory.mktemp("committee")
    save_committee(folder, [build_mace([29], seed=k, **TINY) for k in range(3)])
    return folder


def test_identical_members_have_zero_spread(tmp_path):
    single = tmp_path / "one.model"
    torch.save(build_mace([29], seed=5, **TINY), single)
    folder = save_committee(tmp_path / "same", [torch.load(single, weights_only=False)] * 3)
    atoms = copper(0.1)
    calc = mlip(folder)
    e, f, s = evaluate(atoms, calc)
    e1, f1, s1 = evaluate(atoms, mlip(single))
    assert e == pytest.approx(e1, abs=1e-10)
    np.testing.assert_allclose(f, f1, atol=1e-12)
    np.testing.assert_allclose(s, s1, atol=1e-12)
    assert calc.results["energy_spread"] == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(calc.results["force_spread"], 0.0, atol=1e-12)
    batched = make_evaluator([atoms, atoms], lambda: mlip(folder), engine="batched")
    batched(np.concatenate([atoms.positions] * 2))
    np.testing.assert_allclose(batched.spread.forces, 0.0, atol=1e-12)
    assert "force_spread" not in evaluate_results(atoms, single)  # one model: no spread


def evaluate_results(atoms, model):
    calc = mlip(model)
    evaluate(atoms, calc)
    return calc.results


def test_committee_is_the_member_mean_with_the_member_std_beside_it(untrained):
    atoms = copper(0.15, seed=2)
    members = sorted(untrained.glob("member_*.model"))
    each = [evaluate(atoms, mlip(m)) for m in members]
    calc = mlip(untrained)
    e, f, s = evaluate(atoms, calc)
    assert e == pytest.approx(np.mean([r[0] for r in each]), abs=1e-10)
    np.testing.assert_allclose(f, np.mean([r[1] for r in each], axis=0), atol=1e-12)
    np.testing.assert_allclose(s, np.mean([r[2] for r in each], axis=0), atol=1e-12)
    forces = np.array([r[1] for r in each])
    # per atom: root mean square over members of the deviation vector's length
    expected = np.sqrt(np.mean(np.sum((forces - forces.mean(0)) ** 2, axis=2), axis=0))
    np.testing.assert_allclose(calc.results["force_spread"], expected, atol=1e-12)
    assert calc.results["energy_spread"] == pytest.approx(np.std([r[0] for r in each]))
    assert expected.max() > 1e-4  # different seeds disagree
    # the batched engine (ragged batch) and the ASE path agree on mean and spread
    big = copper(0.1, seed=3) * (2, 1, 1)
    ev = make_evaluator([atoms, big], lambda: mlip(untrained), engine="batched")
    energies, _, _ = ev(np.concatenate([atoms.positions, big.positions]))
    assert energies[0] == pytest.approx(e, abs=1e-10)
    np.testing.assert_allclose(ev.spread.forces[:len(atoms)], expected, atol=1e-12)
    big_calc = mlip(untrained)
    evaluate(big, big_calc)
    assert ev.spread.max_force(ev.offsets)[1] == pytest.approx(big_calc.results[
        "force_spread"].max(), abs=1e-12)
    assert ev.spread.energy[1] == pytest.approx(big_calc.results["energy_spread"], abs=1e-10)


def test_spread_of_a_pure_function_of_member_results():
    forces = np.zeros((2, 1, 3))
    forces[1, 0] = [3.0, 4.0, 0.0]  # members 5 eV/A apart: each 2.5 eV/A from the mean
    spread = committee_spread(np.array([[1.0], [3.0]]), forces)
    assert spread.forces[0] == pytest.approx(2.5) and spread.energy[0] == pytest.approx(1.0)


@pytest.mark.slow  # fitting two members: ~20 s on 2 cores
def test_spread_far_from_the_training_data_exceeds_that_on_it(tmp_path):
    """Two members fitted to EMT on rattled fcc Cu agree there; on cells they never saw
    (compressed by 9 %, or rattled four times as far) they disagree."""
    rng = np.random.default_rng(0)
    train = []
    for k in range(4):
        atoms = copper(0.08, seed=10 + k)
        atoms.calc = EMT()
        atoms.get_forces()
        train.append(atoms)
    members = [build_mace([29], seed=k, **TINY) for k in range(2)]
    for m in members:
        fit(m, train, steps=30, lr=0.03)
    folder = save_committee(tmp_path / "fitted", members)

    def max_spread(atoms):
        return evaluate_results(atoms, folder)["force_spread"].max()

    on = max(max_spread(a) for a in train)
    compressed = min(max_spread(copper(0.05, a=3.3, seed=int(s))) for s in rng.integers(99, size=2))
    rattled = min(max_spread(copper(0.3, seed=int(s))) for s in rng.integers(99, size=2))
    assert compressed > 3 * on and rattled > 3 * on


def committee_md(untrained, out, raise_on_blowup=False, **kw):
    base = dict(n_steps=12, stride=1, friction_per_fs=0.01, log_interval_s=3600,
                flush_interval_s=3600, min_contact=0.0)
    rep = md.Replica("cu", copper(0.02) * (2, 1, 1), 300.0, seed=7,
                     meta={"x": 0.0, "source": "cu"})
    return md.run([rep], lambda s: make_evaluator(s, lambda: mlip(untrained)),
                  md.LangevinSettings(**{**base, **kw}), out, level="mace",
                  raise_on_blowup=raise_on_blowup)[0]


def test_md_stops_when_the_committee_leaves_its_domain_with_frames_kept(untrained, tmp_path):
    free = committee_md(untrained, tmp_path / "free", n_steps=8)
    assert free.status == traj.STATUS_FINISHED
    spread = np.asarray(store.read(free.path).meta["max_force_spread"], dtype=float)
    assert spread.shape == (9,) and np.all(spread > 0)
    # a limit just below the largest spread of steps 1..8: the run stops at the first
    # step above it, with every earlier frame kept and identical to the free run's
    limit = spread[1:].max() * (1 - 1e-9)
    first = 1 + int(np.flatnonzero(spread[1:] > limit)[0])
    out = committee_md(untrained, tmp_path / "limited", n_steps=8,
                       max_uncertainty=float(limit))
    assert out.status.startswith(traj.LEFT_DOMAIN) and "max_uncertainty" in out.status
    kept = store.read(out.path)
    assert list(kept.meta["step"]) == list(range(first))
    np.testing.assert_allclose(kept.positions, store.read(free.path).positions[:8 * first],
                               atol=1e-12)
    assert traj.stopped(traj.status(out.path))
    again = committee_md(untrained, tmp_path / "limited", n_steps=8,
                         max_uncertainty=float(limit))
    assert again.steps_run == 0  # a stopped replica is not resumed
    with pytest.raises(md.BlowUp, match="left the training domain"):
        committee_md(untrained, tmp_path / "limited", raise_on_blowup=True, n_steps=8,
                     max_uncertainty=float(limit))


def test_uncertainty_is_checked_before_the_contact_check(untrained, tmp_path):
    # Cu-Cu 2.55 A < 1.0 x the covalent-radii sum: the contact check would fire at step 1
    out = committee_md(untrained, tmp_path, min_contact=1.0, max_uncertainty=1e-9)
    assert out.status.startswith(traj.LEFT_DOMAIN) and out.last_step == 0


def test_max_uncertainty_needs_a_committee(tmp_path):
    single = tmp_path / "one.model"
    torch.save(build_mace([29], **TINY), single)
    rep = md.Replica("cu", copper(), 300.0, seed=1)
    with pytest.raises(ValueError, match="max_uncertainty = 0.2 eV/A needs a committee"):
        md.run([rep], lambda s: make_evaluator(s, lambda: mlip(single)),
               md.LangevinSettings(n_steps=2, max_uncertainty=0.2), tmp_path, level="mace")
    with pytest.raises(ValueError, match="max_uncertainty"):
        md.LangevinSettings(max_uncertainty=0.0)


def test_bad_committee_folders_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="without committee.json"):
        mlip(tmp_path)
    (tmp_path / "committee.json").write_text(json.dumps({"members": ["member_0.model"]}))
    with pytest.raises(FileNotFoundError, match="member_0.model"):
        mlip(tmp_path)
    (tmp_path / "committee.json").write_text(json.dumps({"members": []}))
    with pytest.raises(ValueError, match="'members'"):
        mlip(tmp_path / "committee.json")


# ------------------------------------------------------- train.py model.committee=K
def cu_set(n: int):
    """Labeled (EMT) rattled and strained Cu cells as a capml data set."""
    from helpers.labeling import emt_labeled_copper

    from capml.data import StructureSet

    return StructureSet.from_atoms(emt_labeled_copper(n, rattle=0.08, strain=0.02))


@pytest.mark.slow
def test_train_writes_a_committee_that_loads_as_one_calculator(tmp_path):
    """``model.committee=2`` through mace's trainer: two members with their own seeds and
    train/val draws, one test split, saved as a folder that calculator=mlip loads."""
    from conftest import compose_cfg

    from capml.data import write
    from capml.training import mace_finetune as mf

    write(tmp_path / "cu.h5", cu_set(20))
    cfg = compose_cfg("train_mace", [
        f"data.low_level={tmp_path / 'cu.h5'}", "calculator@model.e0s_calculator=emt",
        "model.name=cu", "model.committee=2", "model.mace.max_num_epochs=3",
        "model.mace.swa=false", "model.mace.hidden_irreps=4x0e", "model.mace.r_max=3.0",
        "model.mace.max_ell=1", "model.mace.correlation=1", "model.mace.num_interactions=1",
        "model.mace.radial_MLP=[8]", "data.split.fractions=[0.6,0.2,0.2]",
        f"model.export_dir={tmp_path / 'export'}"], tmp_path / "run")
    mf.run(cfg)
    manifest = json.loads((tmp_path / "run" / "cu" / "committee.json").read_text())
    assert manifest["members"] == ["member_0.model", "member_1.model"]
    assert [m["seed"] for m in manifest["details"]] == [0, 1]
    vals = [set(m["val_ids"]) for m in manifest["details"]]
    assert vals[0] != vals[1] and all(v.isdisjoint(manifest["test_ids"]) for v in vals)
    records = [yaml_of(tmp_path / "run" / f"member_{k}" / "cu.yaml") for k in range(2)]
    assert [r["ids"]["test"] for r in records] == [manifest["test_ids"]] * 2
    assert {r["training"]["seed"] for r in records} == {0, 1}
    assert (tmp_path / "export" / "cu" / "committee.json").is_file()
    calc = mlip(tmp_path / "export" / "cu")
    evaluate(copper(0.1), calc)
    assert calc.results["force_spread"].shape == (4,) and calc.results["energy_spread"] > 0
    with pytest.raises(ValueError, match="model.committee = 0"):
        mf.run(compose_cfg("train_mace", ["model.committee=0"], tmp_path / "bad"))


def yaml_of(path):
    import yaml

    return yaml.safe_load(path.read_text())


def test_relax_reports_the_committee_spread_of_its_final_structures(cfg_factory, tmp_path,
                                                                     untrained):
    import pandas as pd
    from ase.io import write

    from capml.calculators.mlip import spread_of
    from capml.tasks import dispatch

    write(tmp_path / "in.extxyz", [copper(0.05, seed=k) for k in range(2)])
    cfg = cfg_factory("simulate", "task=relax", "calculator=mlip",
                      f"calculator.model={untrained}", f"task.input={tmp_path / 'in.extxyz'}",
                      "task.index=:", "task.max_steps=5")
    dispatch("simulate", cfg)
    out = store.read(tmp_path / "relaxed.h5")
    want = [spread_of(a, mlip(untrained))["max_force_spread"] for a in out.to_atoms()]
    np.testing.assert_allclose(out.meta["max_force_spread"], want, rtol=1e-10)
    assert np.all(np.asarray(want) > 0) and np.all(np.isfinite(out.meta["energy_spread"]))
    table = pd.read_csv(tmp_path / "relax.csv")
    np.testing.assert_allclose(table["max_force_spread_eV_A"], want, rtol=1e-6)
    assert np.isnan(spread_of(copper(), EMT())["max_force_spread"])  # no committee: NaN


def test_analyses_refuse_or_flag_frames_beyond_the_uncertainty_limit(untrained, tmp_path):
    from capml.data import DataError

    path = committee_md(untrained, tmp_path, n_steps=6).path
    run = traj.read_trajectory(path)
    spread = run.max_force_spread
    limit = float(np.median(spread))
    first = int(np.argmax(spread > limit))
    cut, n = traj.within_uncertainty(run, limit, "refuse")
    assert n == int((spread > limit).sum()) > 0
    assert len(cut.times_fs) == first == cut.positions.shape[0] == cut.velocities.shape[0]
    assert np.all(cut.max_force_spread <= limit)
    kept, n_flag = traj.within_uncertainty(run, limit, "flag")
    assert kept is run and n_flag == n
    assert traj.within_uncertainty(run, None)[0] is run
    with pytest.raises(ValueError, match="beyond_uncertainty"):
        traj.within_uncertainty(run, limit, "drop")
    single = tmp_path / "one.model"
    torch.save(build_mace([29], **TINY), single)
    rep = md.Replica("one", copper(), 300.0, seed=1, meta={"x": 0.0, "source": "one"})
    md.run([rep], lambda s: make_evaluator(s, lambda: mlip(single)),
           md.LangevinSettings(n_steps=2, stride=1), tmp_path / "single", level="mace")
    alone = traj.read_trajectory(tmp_path / "single" / "one.h5")
    assert np.isnan(alone.max_force_spread).all()
    with pytest.raises(DataError, match="max_force_spread"):
        traj.within_uncertainty(alone, 0.1)
