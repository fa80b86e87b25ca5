"""simulate.py task=active_learning with a cheap reference: EMT copper, a tiny MACE committee
fine-tuned member-wise through mace's trainer."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers.labeling import emt_labeled_copper
from helpers.mace import build_mace, fit

from capml import data as store
from capml.data import StructureSet
from capml.tasks import dispatch
from capml.training import active_learning as al
from capml.training import mace_finetune

TINY = dict(r_max=4.0, hidden_irreps="8x0e", num_interactions=1, correlation=1, max_ell=1)


def cu_cells(n: int, rattle: float = 0.05, seed: int = 4) -> list:
    return emt_labeled_copper(n, rattle=rattle, seed=seed)


@contextlib.contextmanager
def killed_at_the_second_member():
    """mace's trainer, interrupted when it starts its second run (a kill mid-committee)."""
    real, calls = mace_finetune.run_trainer, []

    def run_trainer(*args, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return real(*args, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mace_finetune, "run_trainer", run_trainer)
        yield


def al_cfg(cfg_factory, root, *extra):
    return cfg_factory(
        "simulate", "task=active_learning", "calculator=emt", f"task.committee={root / 'c0'}",
        f"task.data={root / 'cu.h5'}", f"task.input={root / 'cu.h5'}", "task.select=null",
        "task.index=[0]", "task.compositions=all", "task.temperatures=[300,1200]", "task.duration_ps=0.06",
        "task.stride=3", "task.max_temperature_factor=10", "task.select_threshold=0.05",
        "task.max_uncertainty=2.0", "task.max_per_round=4", "task.max_rounds=2",
        "task.log_interval_s=3600", "model.name=cu", "model.mace.max_num_epochs=3",
        "model.mace.swa=false", "model.mace.batch_size=4", "model.mace.lr=0.005",
        "calculator@model.e0s_calculator=emt", "data.split.fractions=[0.7,0.15,0.15]", *extra)


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory):
    """A two-round run killed while training member 1 of round 1, then rerun: the state
    at the kill and the finished run."""
    from conftest import compose_cfg

    root = tmp_path_factory.mktemp("al")
    train = cu_cells(24)
    store.write(root / "cu.h5", StructureSet.from_atoms(train))
    (root / "c0").mkdir()
    for k in range(2):
        member = build_mace([29], seed=k, **TINY)
        fit(member, train[k::2], steps=20, lr=0.02)
        torch.save(member, root / "c0" / f"member_{k}.model")
    (root / "c0" / "committee.json").write_text(json.dumps(
        {"members": ["member_0.model", "member_1.model"]}))
    out = root / "run"

    def make():
        return al_cfg(lambda *a: compose_cfg(a[0], list(a[1:]), out), root)

    with killed_at_the_second_member():
        with pytest.raises(KeyboardInterrupt):
            dispatch("simulate", make())
    r1 = out / "round_1"
    at_kill = {"label_seconds": store.read(r1 / "selected.h5").meta["label_seconds"].copy(),
               "member_0": (r1 / "train" / "member_0" / "cu.model").stat().st_mtime_ns,
               "md": {p.name: p.stat().st_mtime_ns for p in (r1 / "md").glob("*.h5")},
               "n_data": store.count(root / "cu.h5")}
    assert not (r1 / "train" / "member_1" / "cu_metrics.json").exists()
    records = dispatch("simulate", make())
    return root, out, at_kill, records


@pytest.mark.slow  # ~3 min on 2 loaded cores: 4 fine-tuning runs of mace's trainer
def test_rounds_complete_and_lower_the_spread_on_their_selections(killed_and_resumed):
    root, out, _, records = killed_and_resumed
    assert len(records) == 2 and all((out / f"round_{r}" / "round.json").is_file()
                                     for r in (1, 2))
    first = json.loads((out / "round_1" / "round.json").read_text())
    assert first["n_candidates"] >= first["n_selected"] > 0 and not first["converged"]
    assert first["n_selected"] <= 4
    spreads = [s["md_max_force_spread_eV_A"] for s in first["selected"]]
    assert all(s > 0.05 or c.startswith("last frame") for s, c in
               zip(spreads, [s["candidate"] for s in first["selected"]]))
    old, new = first["errors"]["old"], first["errors"]["new"]
    # retrained on exactly these frames, the members now agree (and err less) there
    assert new["mean_max_spread_eV_A"] < old["mean_max_spread_eV_A"]
    assert (new["summary"]["parity"]["forces"]["mae"]
            < old["summary"]["parity"]["forces"]["mae"])
    # the MD with the old committee re-evaluated: the stored spread is the old committee's
    np.testing.assert_allclose([f["max_force_spread_eV_A"] for f in old["frames"]], spreads,
                               rtol=1e-6)
    assert {r["replica"] for r in first["replicas"]} == {"cu-000_T300K", "cu-000_T1200K"}
    assert all(0 < r["survived_ps"] <= 0.06 for r in first["replicas"])
    # round 2 ran its MD with round 1's committee
    second = json.loads((out / "round_2" / "round.json").read_text())
    assert second["committee_in"] == first["committee_out"]
    data = store.read(root / "cu.h5")
    added = data.select(method="active_learning")
    assert len(added) == sum(r.get("n_labeled", 0) for r in records)
    assert set(added.meta["round"]) <= {1, 2} and set(added.meta["split"]) == {"train"}
    assert set(added.meta["level"]) == {"emt"} and np.all(data.meta["round"][:24] == -1)
    assert len(set(data.meta["id"])) == len(data)  # nothing appended twice
    tests = [json.loads((out / f"round_{r}" / "train" / "cu" / "committee.json").read_text())[
        "test_ids"] for r in (1, 2)]
    assert tests[0] == tests[1] and not any(i.startswith("r") for i in tests[0])
    table = pd.read_csv(out / "rounds.csv")
    assert list(table["round"]) == [1, 2]
    assert table["n_selected"][0] == first["n_selected"]


@pytest.mark.slow
def test_a_killed_round_resumes_without_relabeling_or_retraining(killed_and_resumed):
    root, out, at_kill, _ = killed_and_resumed
    r1 = out / "round_1"
    np.testing.assert_array_equal(store.read(r1 / "selected.h5").meta["label_seconds"],
                                  at_kill["label_seconds"])
    assert (r1 / "train" / "member_0" / "cu.model").stat().st_mtime_ns == at_kill["member_0"]
    assert {p.name: p.stat().st_mtime_ns for p in (r1 / "md").glob("*.h5")} == at_kill["md"]
    assert (r1 / "train" / "cu" / "committee.json").is_file()
    n_round_1 = json.loads((r1 / "round.json").read_text())["n_labeled"]
    assert at_kill["n_data"] == 24 + n_round_1  # appended before the kill, not again after


def test_member_wise_fine_tuning_starts_each_member_from_its_own_and_resumes(tmp_path):
    """``model.foundation=<committee folder>``: member k fine-tuned from old member k (its
    weights stay nearer to old member k than to the other one); a run killed while training
    member 1 keeps member 0 when rerun."""
    from conftest import compose_cfg

    store.write(tmp_path / "cu.h5", StructureSet.from_atoms(cu_cells(16)))
    old = tmp_path / "c0"
    old.mkdir()
    for k in range(2):
        torch.save(build_mace([29], seed=10 + k, **TINY), old / f"member_{k}.model")
    (old / "committee.json").write_text(json.dumps(
        {"members": ["member_0.model", "member_1.model"]}))

    def cfg(*extra):
        return compose_cfg("train_mace", [
            f"data.low_level={tmp_path / 'cu.h5'}", f"model.foundation={old}", "model.name=cu",
            "model.committee=2", "model.mace.max_num_epochs=2", "model.mace.swa=false",
            "data.split.fractions=[0.7,0.15,0.15]", *extra], tmp_path / "run")

    with pytest.raises(ValueError, match="committee of 2 members.*model.committee=2 \\(got 3"):
        mace_finetune.run(cfg("model.committee=3"))
    with killed_at_the_second_member():
        with pytest.raises(KeyboardInterrupt):
            mace_finetune.run(cfg())
    member_0 = tmp_path / "run" / "member_0" / "cu.model"
    stamp = member_0.stat().st_mtime_ns
    real = mace_finetune.run_trainer
    with pytest.MonkeyPatch.context() as mp:
        trained = []
        mp.setattr(mace_finetune, "run_trainer", lambda *a, **kw: trained.append(1) or real(
            *a, **kw))
        mace_finetune.run(cfg())
    assert len(trained) == 1 and member_0.stat().st_mtime_ns == stamp  # only member 1 ran
    new = tmp_path / "run" / "cu"
    assert json.loads((new / "committee.json").read_text())["foundation"] == str(old)

    def weights(path):
        return {n: p.detach() for n, p in torch.load(path, weights_only=False).named_parameters()}

    def distance(a, b):  # over the weights both models have (the trainer adds a few)
        common = [n for n in a if n in b and a[n].shape == b[n].shape]
        assert len(common) > 0.9 * len(a)
        return float(torch.sqrt(sum(torch.sum((a[n] - b[n]) ** 2) for n in common)))

    before = [weights(old / f"member_{k}.model") for k in range(2)]
    for k in range(2):
        after = weights(new / f"member_{k}.model")
        assert 0 < distance(after, before[k]) < distance(after, before[1 - k])
        record = yaml_of(tmp_path / "run" / f"member_{k}" / "cu.yaml")
        assert record["training"]["foundation"] == str((old / f"member_{k}.model").resolve())


def yaml_of(path):
    import yaml

    return yaml.safe_load(path.read_text())


def test_appended_frames_train_and_the_old_rows_keep_the_split_training_drew(cfg_factory,
                                                                              tmp_path):
    from capml.data.splits import SplitSettings, labeled, resolve_split
    from capml.tasks.active_learning import append_once

    path = tmp_path / "cu.h5"
    store.write(path, StructureSet.from_atoms(cu_cells(12)))
    drawn, _ = resolve_split(labeled(store.read(path)),
                             SplitSettings(fractions=(0.7, 0.15, 0.15), seed=0))
    new = cu_cells(3, seed=9)
    for k, atoms in enumerate(new):
        atoms.info["id"] = f"r1-new-{k}"
    cfg = al_cfg(cfg_factory, tmp_path)
    append_once(path, StructureSet.from_atoms(new), cfg)
    data = store.read(path)
    assert list(data.meta["split"]) == list(drawn) + ["train"] * 3
    assert set(drawn) == {"train", "val", "test"}
    append_once(path, StructureSet.from_atoms(new), cfg)  # a rerun appends nothing
    assert store.count(path) == 15


def test_candidates_are_frames_above_the_threshold_and_last_frames_of_stopped_runs():
    from types import SimpleNamespace as Run

    runs = [Run(max_force_spread=np.array([0.1, 0.3, 0.2, 0.4]), status="finished"),
            Run(max_force_spread=np.array([0.1, 0.12]),
                status="left the training domain: committee force spread 0.9 eV/A"),
            Run(max_force_spread=np.array([0.05, 0.1]), status="blown up: atoms too close"),
            Run(max_force_spread=np.array([0.1, 0.1]), status="finished")]
    got = [(c.trajectory, c.frame, c.why) for c in al.candidates(runs, 0.25)]
    assert got == [(0, 1, "spread above threshold"), (0, 3, "spread above threshold"),
                   (1, 1, "last frame before leaving the domain"),
                   (2, 1, "last frame before blowing up")]
    assert al.candidates(runs[3:], 0.25) == []  # a round like this one ends the loop


def test_farthest_point_sampling_picks_the_most_different_frames():
    x = np.array([[0.0], [0.1], [5.0], [5.1], [10.0]])
    assert al.farthest_point_sampling(x, 3, first=0) == [0, 4, 2]
    assert sorted(al.farthest_point_sampling(x, 9, first=1)) == [0, 1, 2, 3, 4]
    cands = [al.Candidate(0, f, s, "") for f, s in enumerate([0.2, 0.9, 0.3, 0.2, 0.1])]
    assert al.thin(cands, x, 2) == [1, 4]  # the most uncertain first, then the farthest
    d = al.structure_descriptor(np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]),
                                np.array([29, 29, 47]), [29, 47, 79])
    np.testing.assert_allclose(d, [2.0, 3.0, 5.0, 6.0, 0.0, 0.0])


@pytest.mark.parametrize("override, match", [
    ("task.select_threshold=0", "task.select_threshold = 0"),
    ("task.max_uncertainty=null", "task.max_uncertainty = null"),
    ("task.max_uncertainty=0.01", "must exceed task.select_threshold"),
    ("task.committee=NOWHERE", "task.committee = .*NOWHERE: expected a committee folder"),
    ("task.committee=ONE", "task.committee = .*ONE: .*>= 2 members"),
    ("task.data=NOWHERE.h5", "task.data = .*NOWHERE.h5: no such data file"),
    ("calculator=gfn2", r"labeled with \['emt'\], but calculator 'gfn2-xtb'"),
])
def test_bad_settings_are_named(cfg_factory, tmp_path, override, match):
    store.write(tmp_path / "cu.h5", StructureSet.from_atoms(cu_cells(2)))
    for name, size in (("c0", 2), ("ONE", 1)):
        (tmp_path / name).mkdir()
        files = [f"member_{k}.model" for k in range(size)]
        for k, f in enumerate(files):
            torch.save(build_mace([29], seed=k, **TINY), tmp_path / name / f)
        (tmp_path / name / "committee.json").write_text(json.dumps({"members": files}))
    override = override.replace("ONE", str(tmp_path / "ONE"))
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        dispatch("simulate", al_cfg(cfg_factory, tmp_path, override))
    assert not list(tmp_path.glob("round_*"))


def test_demo_experiment_starts_from_the_bundled_committee_on_the_pbesol_data(cfg_factory):
    from capml.calculators.mlip import committee_members

    cfg = cfg_factory("simulate", "experiment=active_learning_demo")
    t = cfg.task
    assert len(committee_members(t.committee)) == 3
    assert t.data.endswith("data/demo/low_pbesol.h5") and cfg.calculator.level == "gpaw-pbesol-pw"
    assert 0 < t.select_threshold < t.max_uncertainty
    manifest = json.loads((Path(t.committee) / "committee.json").read_text())
    meta = store.read(t.data).meta
    test_ids = set(meta["id"][meta["split"] == "test"])
    assert set(manifest["test_ids"]) == test_ids  # rounds are scored on the stored test split


def test_rounds_number_on_from_the_data_and_a_resumed_run_keeps_its_own(tmp_path):
    """A run continuing an earlier run's data starts one past its last round (ids and MD
    seeds stay distinct); a resumed run starts at its own first round folder."""
    from capml.tasks.active_learning import first_round

    path, out = tmp_path / "cu.h5", tmp_path / "run"
    store.write(path, StructureSet.from_atoms(cu_cells(4)))
    assert first_round(out, path) == 1

    def add(r):
        rows = StructureSet.from_atoms(cu_cells(2, seed=r))
        rows.meta.update(id=np.array([f"r{r}-{i}" for i in range(2)], dtype=object),
                         round=np.full(2, r, dtype=np.int64))
        store.append(path, rows)

    add(1), add(2)
    assert first_round(out, path) == 3
    (out / "round_3").mkdir(parents=True)
    add(3)
    assert first_round(out, path) == 3
