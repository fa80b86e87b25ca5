"""Langevin MD: ASE's propagator reproduced, canonical statistics (mean kinetic
temperature, Maxwell-Boltzmann velocities), exact resumption after an interruption,
batch independence, blow-up detection, the batched MACE engine, the md task and the
demo/paper experiments."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.md.langevin import Langevin
from helpers.mace import build_mace
from helpers.systems import with_cu3x
from omegaconf import OmegaConf
from scipy import stats

from capml import data as store
from capml.data import DataError
from capml.simulation import md
from capml.simulation import trajectory as traj
from capml.simulation.forces import make_evaluator
from capml.tasks import dispatch
from capml.utils.torch_compat import import_mace


def emt(structures):
    return make_evaluator(structures, EMT)


def copper(repeat=(2, 2, 2)):
    return bulk("Cu", "fcc", a=3.61, cubic=True) * repeat


def settings(**kw):
    base = dict(n_steps=40, stride=5, friction_per_fs=0.01, log_interval_s=3600,
                flush_interval_s=3600)
    return md.LangevinSettings(**{**base, **kw})


def frames(path):
    return store.read(path)


def test_one_replica_follows_ase_langevin(tmp_path):
    atoms = copper()
    rep = md.Replica("cu", atoms, 500.0, seed=11)
    md.run([rep], emt, settings(n_steps=30, stride=30), tmp_path, level="emt")
    ours = frames(tmp_path / "cu.h5")
    rng = np.random.default_rng(11)
    ref = atoms.copy()
    ref.calc = EMT()
    ref.set_velocities(md.maxwell_boltzmann(ref, 500.0, rng) / units.fs)
    Langevin(ref, 1.0 * units.fs, temperature_K=500.0, friction=0.01 / units.fs, fixcm=False,
             rng=rng).run(30)
    last = slice(len(atoms), 2 * len(atoms))
    np.testing.assert_allclose(ours.positions[last], ref.positions, atol=1e-10)
    np.testing.assert_allclose(ours.labels["velocities"][last], ref.get_velocities() * units.fs,
                               atol=1e-12)
    assert ours.labels["energy"][1] == pytest.approx(ref.get_potential_energy(), abs=1e-10)
    assert ours.meta["kinetic_temperature"][1] == pytest.approx(ref.get_temperature(), rel=1e-9)


def test_canonical_temperature_and_maxwell_boltzmann_velocities(tmp_path):
    """32 Cu atoms at 300 K, friction 0.1/fs: after 100 fs the mean kinetic temperature is
    within 4 % of the target (and 4 standard errors from block averages), and velocities
    scaled by sqrt(m / kT) are standard normal (Kolmogorov-Smirnov)."""
    target = 300.0
    rep = md.Replica("cu", copper(), target, seed=3)
    md.run([rep], emt, settings(n_steps=1300, stride=10, friction_per_fs=0.1), tmp_path,
           level="emt")
    data = frames(tmp_path / "cu.h5")
    keep = data.meta["step"] >= 100
    temps = data.meta["kinetic_temperature"][keep]
    blocks = temps[: len(temps) // 9 * 9].reshape(9, -1).mean(axis=1)
    stderr = blocks.std(ddof=1) / np.sqrt(len(blocks))
    assert abs(temps.mean() - target) < max(4 * stderr, 0.01 * target)
    assert abs(temps.mean() / target - 1) < 0.04
    masses = copper().get_masses()
    v = data.labels["velocities"].reshape(len(data), -1, 3)[keep][::2]  # 20 fs apart
    scaled = v * np.sqrt(masses[None, :, None] * md.AMU_TO_EV_FS2_A2 / (units.kB * target))
    assert stats.kstest(scaled.ravel(), "norm").pvalue > 1e-3
    assert np.var(scaled) == pytest.approx(1.0, abs=0.06)


class Interrupt(RuntimeError):
    pass


def interrupting(make, after_calls):
    """An evaluator factory whose evaluators raise after ``after_calls`` calls in all,
    as a killed job would stop."""
    calls = {"n": 0}

    def factory(structures):
        inner = make(structures)

        def call(positions, stress=False):
            calls["n"] += 1
            if calls["n"] > after_calls:
                raise Interrupt("killed")
            return inner(positions, stress=stress)
        return call
    return factory


@pytest.mark.parametrize("flush_interval_s", [0.0, 3600.0])
def test_interrupted_run_resumes_to_the_uninterrupted_trajectory(tmp_path, flush_interval_s):
    """Kill after 23 force calls (frames every 5 steps), rerun: the file equals an
    uninterrupted run with the same seed. The random stream is bit-identical (its state
    is stored with every frame); positions agree to rounding only, because ASE's EMT
    keeps a Verlet neighbour list from earlier steps, so a restarted calculator sums
    the same pair terms in another order (1e-15 A per step). With a long flush interval
    the unflushed frames are lost and recomputed."""
    reps = [md.Replica("a", copper(), 300.0, seed=5), md.Replica("b", copper(), 600.0, seed=6)]
    run = settings(n_steps=40, flush_interval_s=flush_interval_s)
    md.run(reps, emt, run, tmp_path / "full", level="emt")
    with pytest.raises(Interrupt):
        md.run(reps, interrupting(emt, 23), run, tmp_path / "cut", level="emt")
    partial = frames(tmp_path / "cut" / "a.h5")
    assert list(partial.meta["step"]) == ([0, 5, 10, 15, 20] if flush_interval_s == 0 else [0])
    assert traj.status(tmp_path / "cut" / "a.h5") == traj.STATUS_RUNNING
    md.run(reps, emt, run, tmp_path / "cut", level="emt")
    for name in ("a", "b"):
        full = frames(tmp_path / "full" / f"{name}.h5")
        cut = frames(tmp_path / "cut" / f"{name}.h5")
        assert list(cut.meta["step"]) == list(range(0, 41, 5))
        np.testing.assert_allclose(cut.positions, full.positions, rtol=0, atol=1e-12)
        np.testing.assert_allclose(cut.labels["velocities"], full.labels["velocities"],
                                   rtol=0, atol=1e-13)
        np.testing.assert_allclose(cut.labels["energy"], full.labels["energy"], rtol=1e-13)
        np.testing.assert_array_equal(cut.meta["rng_state"], full.meta["rng_state"])
        assert traj.status(tmp_path / "cut" / f"{name}.h5") == traj.STATUS_FINISHED
    longer = md.run(reps, emt, settings(n_steps=50), tmp_path / "cut", level="emt")
    assert [o.last_step for o in longer] == [50, 50] and longer[0].steps_run == 10
    with pytest.raises(DataError, match="friction_per_fs"):
        md.run(reps, emt, settings(n_steps=60, friction_per_fs=0.02), tmp_path / "cut",
               level="emt")


def test_resumed_mace_trajectory_is_bit_identical(tmp_path):
    """With a stateless force model (the batched MACE engine rebuilds its neighbour
    lists every step) the resumed trajectory equals the uninterrupted one exactly."""
    path = tmp_path / "cu.model"
    torch.save(build_mace([29], r_max=3.0, hidden_irreps="8x0e", num_interactions=1), path)
    calculators = import_mace("mace.calculators")

    def mace(structures):
        return make_evaluator(structures, lambda: calculators.MACECalculator(
            models=torch.load(path, weights_only=False), device="cpu",
            default_dtype="float64"), engine="batched")

    reps = [md.Replica("a", copper((1, 1, 2)), 300.0, seed=5),
            md.Replica("b", copper((1, 1, 2)), 600.0, seed=6)]
    run = settings(n_steps=12, stride=3, flush_interval_s=0.0)
    md.run(reps, mace, run, tmp_path / "full", level="mace")
    with pytest.raises(Interrupt):
        md.run(reps, interrupting(mace, 8), run, tmp_path / "cut", level="mace")
    md.run(reps, mace, run, tmp_path / "cut", level="mace")
    for name in ("a", "b"):
        full = frames(tmp_path / "full" / f"{name}.h5")
        cut = frames(tmp_path / "cut" / f"{name}.h5")
        assert list(cut.meta["step"]) == [0, 3, 6, 9, 12]
        np.testing.assert_array_equal(cut.positions, full.positions)
        np.testing.assert_array_equal(cut.labels["velocities"], full.labels["velocities"])
        np.testing.assert_array_equal(cut.labels["forces"], full.labels["forces"])


def test_replica_trajectory_does_not_depend_on_its_batch(tmp_path):
    a, b = md.Replica("a", copper(), 300.0, seed=1), md.Replica("b", copper((2, 2, 1)), 900.0,
                                                                 seed=2)
    md.run([a, b], emt, settings(n_steps=20), tmp_path / "both", level="emt")
    md.run([a], emt, settings(n_steps=20), tmp_path / "alone", level="emt")
    np.testing.assert_array_equal(frames(tmp_path / "both" / "a.h5").positions,
                                  frames(tmp_path / "alone" / "a.h5").positions)
    assert frames(tmp_path / "both" / "b.h5").positions.shape == (5 * 16, 3)


def scaled_forces(factor, after_calls=0):
    def factory(structures):
        inner = emt(structures)
        calls = {"n": 0}

        def call(positions, stress=False):
            calls["n"] += 1
            e, f, s = inner(positions, stress=stress)
            return (e, f * factor, s) if calls["n"] > after_calls else (e, f, s)
        return call
    return factory


def test_blow_up_stops_the_replica_keeps_its_frames_and_lets_others_finish(tmp_path):
    def nan_in_first(structures):
        inner = emt(structures)
        calls = {"n": 0}

        def call(positions, stress=False):
            calls["n"] += 1
            e, f, s = inner(positions, stress=stress)
            if calls["n"] > 12 and len(structures) == 2:
                e = e.copy()
                e[0] = np.nan
            return e, f, s
        return call

    reps = [md.Replica("bad", copper(), 300.0, seed=1), md.Replica("good", copper(), 300.0, seed=2)]
    with pytest.raises(md.BlowUp, match="bad: blown up: non-finite") as err:
        md.run(reps, nan_in_first, settings(n_steps=30), tmp_path, level="emt")
    assert "frames up to step 10 kept" in str(err.value)
    assert list(frames(tmp_path / "bad.h5").meta["step"]) == [0, 5, 10]
    assert traj.status(tmp_path / "bad.h5").startswith("blown up: non-finite")
    assert traj.status(tmp_path / "good.h5") == traj.STATUS_FINISHED
    out = md.run(reps, emt, settings(n_steps=30), tmp_path, level="emt", raise_on_blowup=False)
    assert out[0].status.startswith("blown up") and out[0].steps_run == 0  # not resumed

    # forces x 1e4: omega dt >> 2, the integrator is unstable and the kinetic energy explodes
    hot = md.run([md.Replica("hot", copper(), 300.0, seed=3)], scaled_forces(1e4),
                 settings(n_steps=200), tmp_path / "hot", level="emt", raise_on_blowup=False)
    assert "kinetic temperature" in hot[0].status and hot[0].last_step < 200
    close = md.run([md.Replica("close", copper(), 300.0, seed=4)], emt,
                   settings(n_steps=10, min_contact=1.0), tmp_path / "close", level="emt",
                   raise_on_blowup=False)
    # Cu-Cu 2.55 A < 1.0 x (1.32 + 1.32) A
    assert "(Cu)" in close[0].status and "min_contact 1" in close[0].status


def test_batched_mace_engine_matches_mace_calculator(system, tmp_path, tiny_mace):
    mace = tiny_mace
    cells = [system.parent(0.0) * (2, 1, 1), system.parent(1.0) * (1, 1, 3)]  # ragged batch
    reps = [md.Replica(f"r{k}", c, 300.0, seed=k) for k, c in enumerate(cells)]
    run = settings(n_steps=6, stride=3, stress=True)
    batched = md.run(reps, lambda s: make_evaluator(s, mace, engine="batched"), run,
                     tmp_path / "batched", level="mace")
    md.run(reps, lambda s: make_evaluator(s, mace, engine="serial"), run, tmp_path / "serial",
           level="mace")
    assert [o.status for o in batched] == ["finished", "finished"]
    for rep in reps:
        a, b = frames(tmp_path / "batched" / f"{rep.name}.h5"), frames(
            tmp_path / "serial" / f"{rep.name}.h5")
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-10)
        np.testing.assert_allclose(a.labels["forces"], b.labels["forces"], atol=1e-10)
        np.testing.assert_allclose(a.labels["stress"], b.labels["stress"], atol=1e-12)
    with pytest.raises(ValueError, match="needs a MACE calculator"):
        make_evaluator(reps[0:1], EMT, engine="batched")


def test_md_task_runs_replicas_and_resumes(cfg_factory, tmp_path, caplog):
    cfg = with_cu3x(cfg_factory("simulate", "task=md", "calculator=emt",
                                "task.compositions=[0.0,1.0]", "task.temperatures=[300,600]",
                                "task.duration_ps=0.02", "task.stride=5"))
    outcomes = dispatch("simulate", cfg)
    names = sorted(o.name for o in outcomes)
    assert names == ["x0.0000-random_T300K", "x0.0000-random_T600K",
                     "x1.0000-random_T300K", "x1.0000-random_T600K"]
    data = frames(tmp_path / "x1.0000-random_T600K.h5")
    assert list(data.meta["step"]) == [0, 5, 10, 15, 20]
    np.testing.assert_allclose(data.meta["time"], [0, 5, 10, 15, 20])
    assert set(data.meta["temperature"]) == {600.0} and set(data.meta["x"]) == {1.0}
    assert set(data.meta["method"]) == {"md"} and set(data.meta["level"]) == {"emt"}
    seeds = {o.name: frames(o.path).meta["seed"][0] for o in outcomes}
    assert len(set(seeds.values())) == 4
    caplog.set_level("INFO", logger="capml.simulation.md")
    dispatch("simulate", cfg)
    assert caplog.text.count("already at step 20 of 20") == 4
    with pytest.raises(ValueError, match="task.temperatures"):
        dispatch("simulate", with_cu3x(cfg_factory("simulate", "task=md", "calculator=emt",
                                                   "task.temperatures=[-5]")))


def test_demo_experiment_chains_enumerate_phonons_md(cfg_factory, tmp_path):
    cfg = with_cu3x(cfg_factory("simulate", "experiment=demo", "calculator=emt",
                                "task.stages.enumerate.compositions=[0.0,0.25]",
                                "task.stages.phonons.mesh=[3,3,3]",
                                "task.stages.phonons.npoints=5",
                                "task.stages.md.duration_ps=0.01",
                                "task.stages.md.max_uncertainty=null"))
    results = dispatch("simulate", cfg)
    assert list(results) == ["enumerate", "phonons", "md"]
    ground = store.read(tmp_path / "enumerate" / "ground_states.h5")
    assert sorted(ground.meta["x"]) == [0.0, 0.25] and set(ground.meta["rank"]) == {0}
    import pandas as pd

    table = pd.read_csv(tmp_path / "phonons" / "stability.csv")
    assert sorted(table["id"]) == sorted(ground.meta["id"])
    md_files = sorted(p.name for p in (tmp_path / "md").glob("*.h5"))
    assert md_files == sorted(f"{i}_T300K.h5" for i in ground.meta["id"])


def test_paper_experiment_has_the_papers_parameters(cfg_factory):
    cfg = cfg_factory("simulate", "experiment=paper")
    t = cfg.task
    assert t.name == "pipeline" and list(t.order) == ["enumerate", "phonons", "md"]
    assert cfg.calculator._target_ == "capml.calculators.mlip.labeler"
    e, p, m = t.stages.enumerate, t.stages.phonons, t.stages.md
    assert e.compositions == "all" and e.max_configs == 100 and e.fmax == 0.01
    from capml.structures import System
    from capml.structures.selection import compositions_of

    np.testing.assert_allclose(compositions_of(System.from_config(cfg.system), e.compositions),
                               np.arange(9) / 8)
    assert p.dtype == "float64" and p.input.endswith("enumerate/ground_states.h5")
    assert list(m.temperatures) == [100, 200, 300, 400, 500, 600]
    assert (m.timestep_fs, m.friction_per_fs, m.duration_ps) == (1.0, 1e-3, 50.0)
    assert m.input == p.input and m.compositions == "all"
    resolved = OmegaConf.to_container(t.stages, resolve=True)
    assert resolved["md"]["output_dir"].endswith("/md")


@pytest.mark.slow
def test_demo_experiment_with_gfn2_at_tiny_size(cfg_factory, tmp_path):
    """The real system with GFN2-xTB: Ag3SBr only (plus Ag3SI for the mixing energy),
    3 MD steps; several minutes on 2 cores."""
    cfg = cfg_factory("simulate", "experiment=demo", "calculator=gfn2",
                      "task.stages.enumerate.compositions=[1.0]",
                      "task.stages.phonons.mesh=[4,4,4]", "task.stages.phonons.npoints=11",
                      "task.stages.md.duration_ps=0.003", "task.stages.md.stride=1",
                      "task.stages.md.max_uncertainty=null")
    dispatch("simulate", cfg)
    import pandas as pd

    table = pd.read_csv(tmp_path / "phonons" / "stability.csv")
    assert list(table["x"]) == [1.0] and not bool(table["stable"][0])  # unstable at 0 K
    assert len(frames(tmp_path / "md" / "x1.0000-k8-c000_T300K.h5")) == 4
