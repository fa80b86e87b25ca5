"""MACE training through mace's own trainer: offline, as mace's own tests do it.

A tiny MACE is trained from scratch on one level (EMT), saved, and fine-tuned as the
"foundation" on a second level (EMT plus a Morse pair term); the held-out errors of both
are compared on structures neither saw. Plus the pure pieces: splits, E0s, the trainer
command, the check of what the trainer ran.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.mixing import SumCalculator
from ase.calculators.morse import MorsePotential
from ase.calculators.singlepoint import SinglePointCalculator
from hydra.utils import instantiate
from omegaconf import OmegaConf

from capml.data import StructureSet, write
from capml.data.splits import SplitSettings, labeled
from capml.training import mace_e0s
from capml.training import mace_finetune as mf

TINY = ["model.mace.hidden_irreps=8x0e", "model.mace.r_max=4.5", "model.mace.max_ell=1",
        "model.mace.correlation=2", "model.mace.num_interactions=1",
        "model.mace.radial_MLP=[16]", "model.mace.batch_size=4",
        "data.split.fractions=[0.7,0.1,0.2]"]
SECOND_LEVEL_OFFSET = {"Cu": 2.0, "Au": 1.0}  # eV/atom: the second level's own zero
STRONG_STRESS = ["model.mace.stress_weight=1000.0", "model.mace.swa_stress_weight=1000.0"]


def cuau_set(n: int, seed: int, level: str, calc, offset_eV=None) -> StructureSet:
    """Cu6Au2 cells (two fcc cubes), strained by up to 3 % and rattled by 0.08 A; energies
    plus ``offset_eV`` = {symbol: eV per atom} (another level's reference energies)."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        atoms = bulk("Cu", "fcc", a=3.75, cubic=True) * (2, 1, 1)
        atoms.symbols[rng.choice(len(atoms), 2, replace=False)] = "Au"
        atoms.set_cell(atoms.cell * (1 + rng.uniform(-0.03, 0.03)), scale_atoms=True)
        atoms.positions += rng.normal(0, 0.08, atoms.positions.shape)
        atoms.calc = calc
        res = dict(energy=atoms.get_potential_energy(), forces=atoms.get_forces(),
                   stress=atoms.get_stress())
        res["energy"] += sum((offset_eV or {}).get(s, 0.0) for s in atoms.symbols)
        atoms.calc = SinglePointCalculator(atoms, **res)
        atoms.info.update(id=f"{level}-{i:03d}", level=level, label_status="ok",
                          method="uniform", x=0.25)
        frames.append(atoms)
    return StructureSet.from_atoms(frames)


def second_level():
    return SumCalculator([EMT(), MorsePotential(epsilon=0.1, r0=2.6, rho0=6.0)])


@pytest.fixture(scope="module")
def foundation(tmp_path_factory):
    """A tiny MACE trained from scratch on EMT data through ``train.py model=mace``."""
    from conftest import compose_cfg

    root = tmp_path_factory.mktemp("foundation")
    write(root / "emt.h5", cuau_set(30, 0, "emt", EMT()))
    cfg = compose_cfg("train_mace", [f"data.low_level={root / 'emt.h5'}",
                                "calculator@model.e0s_calculator=emt", "model.name=tiny",
                                "model.mace.max_num_epochs=10", "model.mace.start_swa=8",
                                *TINY], root / "run")
    mf.run(cfg)
    return root / "run" / "tiny.model"


@pytest.fixture(scope="module")
def finetune_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("finetune") / "emt_morse.h5"
    write(path, cuau_set(40, 1, "emt+morse", second_level(), offset_eV=SECOND_LEVEL_OFFSET))
    return path


def finetune(foundation, data, out, *overrides):
    from conftest import compose_cfg

    cfg = compose_cfg("train_mace", [f"data.low_level={data}",
                                f"model.foundation={foundation}", "model.name=ft",
                                "model.mace.max_num_epochs=8", "model.mace.start_swa=6",
                                "model.mace.lr=0.005", f"model.export_dir={out / 'export'}",
                                *TINY, *overrides], out)
    mf.run(cfg)
    return (json.loads((out / "ft_metrics.json").read_text()),
            yaml.safe_load((out / "ft.yaml").read_text()))


@pytest.fixture(scope="module")
def finetuned(foundation, finetune_data, tmp_path_factory):
    """Fine-tuned with a stress weight large enough to matter in a few epochs (stress
    errors in eV/A^3 are small numbers: with the paper's 10 the term is ~1 % of the loss)."""
    return finetune(foundation, finetune_data, tmp_path_factory.mktemp("ft_strong"),
                    *STRONG_STRESS)


def test_finetuning_lowers_the_held_out_error_of_the_foundation(finetuned):
    metrics, record = finetuned
    test = metrics["test"]
    assert test["trained"]["forces"]["mae"] < 0.8 * test["start"]["forces"]["mae"]
    assert test["trained"]["energy"]["mae"] < test["start"]["energy"]["mae"]
    ids = record["ids"]
    assert set(ids["test"]).isdisjoint(ids["train"]) and set(ids["test"]).isdisjoint(ids["val"])
    assert len(ids["test"]) == record["training"]["n_test"] > 0


def test_what_ran_is_what_was_asked(finetuned, foundation):
    _, record = finetuned
    training = record["training"]
    assert training["multihead_finetuning"] is False
    assert training["e0s_method"].startswith("estimated")
    assert set(training["e0s_eV"]) == {"Cu", "Au"}
    assert training["loss"].startswith("UniversalLoss(") and "stress_weight=1000.000" in \
        training["loss"]
    assert "--multiheads_finetuning=False" in training["trainer_args"]
    start = [a for a in training["trainer_args"] if a.startswith("--foundation_model=")]
    assert start and start[0].endswith("foundation_with_e0s.model")  # mace_e0s: why a copy
    assert record["model"]["heads"] == ["Default"]
    assert record["model"]["dtype"] == "float64"
    assert record["model"]["r_max"] == pytest.approx(4.5)  # the foundation's


def test_fine_tuned_model_keeps_the_estimated_e0s(finetuned, foundation, tmp_path_factory):
    """The second level's zero sits 1.75 eV/atom above the first (plus its Morse term):
    the saved model must hold the shifted E0s (mace alone would save, and train with, the
    foundation's) and predict energies at the second level's zero. One stoichiometry: the
    shift is common to both elements."""
    from capml.models import mace as mace_models
    from capml.training.mace_e0s import model_e0s

    metrics, record = finetuned
    out = tmp_path_factory.getbasetemp()
    saved = model_e0s(mace_models.load(next(out.glob("ft_strong*/ft.model"))))
    start = model_e0s(mace_models.load(foundation))
    for symbol, z in (("Cu", 29), ("Au", 79)):
        assert saved[z] == pytest.approx(record["training"]["e0s_eV"][symbol], abs=1e-9)
    shift = saved[29] - start[29]
    assert saved[79] - start[79] == pytest.approx(shift, abs=1e-9) and 0.8 < shift < 2.0
    test = metrics["test"]
    assert test["start"]["energy"]["mae"] > 800.0  # meV/atom: the offset
    assert test["start"]["energy_relative"]["offset"] == pytest.approx(-1e3 * shift, rel=0.1)
    assert test["trained"]["energy"]["mae"] < 30.0


def test_e0_correction_is_a_common_shift_plus_the_min_norm_rest():
    from capml.training.mace_e0s import correction

    rng = np.random.default_rng(3)
    fixed = np.tile([24.0, 8.0, 8.0], (12, 1))  # one stoichiometry: rank 1
    residual = fixed @ np.array([1.0, 1.0, 1.0]) + rng.normal(0, 0.01, 12)
    c = correction(fixed, residual)
    np.testing.assert_allclose(c, residual.mean() / 40.0, atol=1e-12)  # all elements alike
    full = rng.integers(1, 9, size=(20, 3)).astype(float)  # full rank: the exact solution
    truth = np.array([-2.0, 0.5, 3.0])
    np.testing.assert_allclose(correction(full, full @ truth), truth, atol=1e-10)


def test_a_saved_model_with_other_e0s_than_reported_is_refused(foundation, tmp_path):
    from capml.models import mace as mace_models
    from capml.training.mace_e0s import model_e0s, with_e0s

    module = mace_models.load(foundation)
    e0 = {z: v + 1.0 for z, v in model_e0s(module).items()}
    patched = mace_models.load(with_e0s(module, e0, tmp_path / "p.model"))
    assert model_e0s(patched) == pytest.approx(e0)
    mace_e0s.check_saved_e0s(patched, e0, tmp_path / "p.model")
    with pytest.raises(RuntimeError, match="p.model: the saved model's E0s differ"):
        mace_e0s.check_saved_e0s(module, e0, tmp_path / "p.model")


def test_export_copies_model_and_sidecars(finetuned, tmp_path_factory):
    metrics, record = finetuned
    exported = {p.name for p in tmp_path_factory.getbasetemp().glob("ft*/export/*")}
    assert {"ft.model", "ft.yaml", "ft_metrics.json"} <= exported


@pytest.mark.slow
def test_stress_weight_changes_the_stress_error(foundation, finetune_data, finetuned,
                                                tmp_path):
    with_stress = finetuned[0]["test"]["trained"]["stress"]["mae"]
    metrics, record = finetune(foundation, finetune_data, tmp_path,
                               "model.mace.stress_weight=0.0",
                               "model.mace.swa_stress_weight=0.0")
    assert "stress_weight=0.000" in record["training"]["loss"]
    assert metrics["test"]["trained"]["stress"]["mae"] > 1.5 * with_stress


# ------------------------------------------------------------------ pure pieces
def test_split_uses_the_stored_column_when_complete():
    data = cuau_set(10, 2, "emt", EMT())
    data.meta["split"] = np.array(["train"] * 6 + ["val"] * 2 + ["test"] * 2, dtype=object)
    parts = mf.split_data(data, SplitSettings(fractions=(0.85, 0.05, 0.1)))
    assert [len(parts[k]) for k in ("train", "val", "test")] == [6, 2, 2]
    data.meta["split"][0] = "holdout"
    with pytest.raises(ValueError, match="holdout"):
        mf.split_data(data, SplitSettings())
    data.meta["split"][0] = ""  # the GNN's policy: a partly stored split is refused
    with pytest.raises(ValueError, match="set for 9 of 10"):
        mf.split_data(data, SplitSettings(), "emt.h5")


def test_split_is_seeded_and_complete():
    data = cuau_set(30, 3, "emt", EMT())
    a = mf.split_data(data, SplitSettings(fractions=(0.7, 0.1, 0.2), seed=4))
    b = mf.split_data(data, SplitSettings(fractions=(0.7, 0.1, 0.2), seed=4))
    assert [list(a[k].meta["id"]) for k in a] == [list(b[k].meta["id"]) for k in b]
    assert sum(len(p) for p in a.values()) == 30 and len(a["test"]) == 6


def test_labeled_keeps_only_ok_rows_with_finite_labels():
    data = cuau_set(4, 5, "emt", EMT())
    data.meta["label_status"][1] = "failed: SCF"
    data.labels["energy"][2] = np.nan
    assert list(labeled(data).meta["id"]) == ["emt-000", "emt-003"]


def test_average_e0s_refused_for_fixed_stoichiometry(system):
    rng = np.random.default_rng(0)
    cells = [system.random_solid_solution(x, rng) for x in (0.25, 0.5, 0.75, 1.0)]
    data = StructureSet.from_atoms(cells)
    counts, zs = mace_e0s.composition_matrix(data)
    assert zs == [16, 35, 47, 53] and np.linalg.matrix_rank(counts) == 2
    with pytest.raises(ValueError, match="rank 2 for 4 elements"):
        mace_e0s.e0s_argument("average", data, None, None)
    varied = cuau_set(3, 0, "emt", EMT())
    varied.numbers[varied.offsets[1]] = 79  # Cu5Au3 next to Cu6Au2: rank 2 of 2
    assert mace_e0s.e0s_argument("average", varied, None, None)[0] == "average"


def test_isolated_e0s_are_isolated_atom_energies_at_the_data_level():
    data = cuau_set(3, 0, "emt", EMT())
    lab = instantiate(OmegaConf.create({"_target_": "capml.calculators.reference."
                                        "ase_calculator", "level": "emt",
                                        "calculator": {"_target_": "ase.calculators.emt.EMT",
                                                       "_partial_": True}}))
    arg, method, e0 = mace_e0s.e0s_argument("auto", data, None, lambda: lab)
    from ase import Atoms

    for z in (29, 79):
        atom = Atoms(numbers=[z], pbc=False)
        atom.calc = EMT()
        assert e0[z] == pytest.approx(atom.get_potential_energy())
    assert method == "isolated (emt)" and arg.startswith("{29: ")
    other = cuau_set(2, 0, "emt+morse", second_level())
    with pytest.raises(ValueError, match="emt\\+morse"):
        mace_e0s.e0s_argument("isolated", other, None, lambda: lab)


def test_e0s_choices_need_what_they_need():
    data = cuau_set(2, 0, "emt", EMT())
    with pytest.raises(ValueError, match="needs model.foundation"):
        mace_e0s.e0s_argument("estimated", data, None, None)
    assert mace_e0s.e0s_argument("auto", data, "/f.model", None)[:2] == ("estimated", "estimated")
    with pytest.raises(ValueError, match="lacks \\['Au'\\]"):
        mace_e0s.e0s_argument({"Cu": -1.0}, data, None, None)
    arg, method, e0 = mace_e0s.e0s_argument({"Cu": -1.0, "Au": -2.5}, data, None, None)
    assert arg == "{29: -1.0, 79: -2.5}" and method == "given"


def test_requests_mace_would_ignore_are_refused(cfg_factory):
    cfg = cfg_factory("train_mace", "model.mace.loss=weighted")
    with pytest.raises(ValueError, match="stress_weight=10.0 has no effect"):
        mf.check_request(cfg.model)
    cfg = cfg_factory("train_mace", "model.foundation=/some/local.model",
                      "model.multihead_finetuning=true")
    with pytest.raises(ValueError, match="pt_train_file"):
        mf.check_request(cfg.model)


def test_trainer_arguments():
    argv = mf.trainer_args({"ema": True, "swa": False, "r_max": 5.0, "radial_MLP": [8, 8],
                            "foundation_model": None, "E0s": "{29: -1.0}"})
    assert argv == ["--ema", "--r_max=5.0", "--radial_MLP=[8, 8]", "--E0s={29: -1.0}"]
    with pytest.raises(ValueError, match="no_such_option"):
        mf.trainer_args({"no_such_option": 1})
    with pytest.raises(ValueError, match="amsgrad"):
        mf.trainer_args({"amsgrad": False})


def test_verify_run_catches_silent_changes(cfg_factory):
    cfg = cfg_factory("train_mace", "model.foundation=/f.model")
    log = ("INFO: Using foundation model /f.model as initial checkpoint.\n"
           "INFO: UniversalLoss(energy_weight=1.000, forces_weight=150.000, "
           "stress_weight=10.000)\n"
           "INFO: Atomic Energies used (z: eV) for head Default: {29: -1.5, 79: -2.0}\n")
    ran = mf.verify_run(log, ["Default"], cfg.model)
    assert ran["e0s"] == {29: -1.5, 79: -2.0} and ran["multihead_finetuning"] is False
    with pytest.raises(RuntimeError, match="multihead"):
        mf.verify_run(log + "INFO: Using multiheads finetuning mode\n", ["pt_head", "Default"],
                      cfg.model)
    with pytest.raises(RuntimeError, match="stress_weight=10.0"):
        mf.verify_run(log.replace("stress_weight=10.000", "stress_weight=0.000"), ["Default"],
                      cfg.model)
    cfg.model.multihead_finetuning = True
    with pytest.raises(RuntimeError, match="multihead"):
        mf.verify_run(log, ["Default"], cfg.model)


def test_wandb_logger_maps_to_mace_options(cfg_factory, tmp_path):
    cfg = cfg_factory("train_mace", "logger=wandb")
    opts, env = mf.wandb_options(cfg.logger, tmp_path)
    assert opts["wandb"] is True and opts["wandb_project"] == cfg.logger.project
    assert opts["wandb_dir"] == str(tmp_path.resolve()) and env == {"WANDB_MODE": "offline"}
    assert mf.wandb_options(cfg_factory("train_mace", "logger=csv").logger,
                            tmp_path) == ({}, {})


def test_committee_redraws_keep_active_learning_frames_in_training():
    """Member k > 0 redraws train/val from the pool, but frames active learning added stay in
    every member's training set (else a member only validates on where it disagreed)."""
    data = cuau_set(20, 4, "emt", EMT())
    data.meta["method"] = np.array(["uniform"] * 14 + ["active_learning"] * 6, dtype=object)
    parts = {"train": data.subset(np.arange(3, 20)), "val": data.subset(np.arange(0, 3)),
             "test": data.subset([])}
    learned = {str(i) for i in data.meta["id"][14:]}
    for seed in range(5):
        member = mf.redraw_train_val(parts, seed)
        assert learned <= set(member["train"].meta["id"])
        assert len(member["train"]) == 17 and len(member["val"]) == 3
        assert set(member["val"].meta["id"]).isdisjoint(learned)
    first, second = (set(mf.redraw_train_val(parts, s)["val"].meta["id"]) for s in (1, 2))
    assert first != second  # the rest is still redrawn per member
