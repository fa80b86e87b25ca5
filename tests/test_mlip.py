"""The MLIP calculator factory, the mlip calculator config, and the bundled demo potential."""

from __future__ import annotations

import json
import urllib.error

import numpy as np
import pytest
import torch
import yaml
from ase.build import bulk
from conftest import DEMO
from hydra.utils import instantiate

from capml.calculators.mlip import labeler, mlip
from capml.models import mace as mace_models


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """An untrained float64 MACE for Cu and Au, saved as mace saves its models."""
    from helpers.mace import build_mace

    path = tmp_path_factory.mktemp("mlip") / "tiny.model"
    torch.save(build_mace([29, 79], r_max=4.0, hidden_irreps="8x0e", num_interactions=1,
                          correlation=2, max_ell=1, seed=1), path)
    return path


@pytest.fixture
def cuau():
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True)
    atoms.symbols[1] = "Au"
    atoms.positions += np.random.default_rng(3).normal(0, 0.05, atoms.positions.shape)
    return atoms


def test_missing_model_file_names_the_path(tmp_path):
    missing = tmp_path / "nope.model"
    with pytest.raises(FileNotFoundError, match="nope.model"):
        mlip(missing)


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="medium-mpa-0"):
        mlip("no-such-foundation")


def test_foundation_name_without_internet_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # empty cache
    fm = mace_models.import_mace("mace.calculators.foundations_models")

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(fm.urllib.request, "urlopen", offline)
    with pytest.raises(mace_models.ModelUnavailable, match="(?s)medium-mpa-0.*internet"):
        mlip("medium-mpa-0")


def test_bad_dtype_and_device(tiny_model):
    with pytest.raises(ValueError, match="float16"):
        mlip(tiny_model, dtype="float16")
    with pytest.raises(ValueError, match="device 'gpu0'"):
        mlip(tiny_model, device="gpu0")


def test_forces_and_stress_are_energy_derivatives(tiny_model, cuau):
    """Forces = -dE/dr and stress = (1/V) dE/d(strain) (ASE sign), by finite differences."""
    calc = mlip(tiny_model)
    atoms = cuau
    atoms.calc = calc
    forces, stress = atoms.get_forces(), atoms.get_stress(voigt=False)
    h = 1e-4
    for i, k in [(0, 0), (1, 2), (3, 1)]:
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[i, k] += h
        minus.positions[i, k] -= h
        plus.calc = minus.calc = calc
        fd = -(plus.get_potential_energy() - minus.get_potential_energy()) / (2 * h)
        assert forces[i, k] == pytest.approx(fd, abs=1e-6)
    for a, b in [(0, 0), (1, 2)]:
        eps = np.zeros((3, 3))
        eps[a, b] = eps[b, a] = h / 2 if a != b else h
        energies = []
        for sign in (1, -1):
            strained = atoms.copy()
            strained.set_cell(atoms.cell.array @ (np.eye(3) + sign * eps), scale_atoms=True)
            strained.calc = calc
            energies.append(strained.get_potential_energy())
        fd = (energies[0] - energies[1]) / (2 * h) / atoms.get_volume()
        assert stress[a, b] == pytest.approx(fd, abs=1e-7)


def test_float32_agrees_with_float64(tiny_model, cuau):
    e = {}
    for dtype in ("float32", "float64"):
        atoms = cuau.copy()
        atoms.calc = mlip(tiny_model, dtype=dtype)
        e[dtype] = (atoms.get_potential_energy(), atoms.get_forces())
    assert e["float32"][0] == pytest.approx(e["float64"][0], rel=1e-5)
    np.testing.assert_allclose(e["float32"][1], e["float64"][1], atol=1e-4)


def test_calculator_config_instantiates_a_labeler(cfg_factory, tiny_model, cuau):
    cfg = cfg_factory("simulate", "calculator=mlip", "task=label",
                      f"calculator.model={tiny_model}")
    lab = instantiate(cfg.calculator)
    assert lab.level == "mace" and lab.properties == ("energy", "forces", "stress")
    labels, note = lab(cuau)
    direct = cuau.copy()
    direct.calc = lab.calculator()
    assert labels["energy"] == pytest.approx(direct.get_potential_energy(), abs=1e-10)
    assert labels["forces"].shape == (len(cuau), 3) and labels["stress"].shape == (6,)
    assert note == ""
    with pytest.raises(ValueError, match="band_gap"):
        labeler(tiny_model, properties=("energy", "band_gap"))


def test_default_calculator_config_points_at_the_demo_committee(cfg_factory):
    from capml.calculators.mlip import committee_members

    cfg = cfg_factory("simulate", "calculator=mlip", "task=label")
    assert cfg.calculator.model == str(DEMO / "mace_pbesol_al")
    assert len(committee_members(DEMO / "mace_pbesol_al")) == 3


# ------------------------------------------------------------ the bundled demo potential
def test_demo_potential_matches_gfn2_within_its_reported_error():
    """The bundled potential, on the held-out GFN2-xTB demo cells it was not trained on, has
    the energy, force and stress errors its metrics file reports (the same cells)."""
    from capml.analysis.mlip_parity import parity_metrics, predict, reference_values
    from capml.data import read

    record = yaml.safe_load((DEMO / "mace_gfn2.yaml").read_text())
    reported = json.loads((DEMO / "mace_gfn2_metrics.json").read_text())["test"]["trained"]
    module = mace_models.load(DEMO / "mace_gfn2.model")
    assert sorted(mace_models.describe(module)["atomic_numbers"]) == [16, 35, 47, 53]
    from capml.data.splits import labeled

    data = labeled(read(DEMO / "low_gfn2.h5"))
    test_ids = set(record["ids"]["test"])
    assert test_ids.isdisjoint(record["ids"]["train"]) and test_ids.isdisjoint(
        record["ids"]["val"])
    rows = [k for k, i in enumerate(data.meta["id"]) if i in test_ids]
    if not rows:
        pytest.fail(f"{DEMO / 'low_gfn2.h5'} holds none of the demo potential's test cells "
                    f"labeled ({sorted(test_ids)}): bundle the labeled data it was trained on")
    held = data.subset(rows)
    assert set(held.meta["level"]) == {"gfn2-xtb"} and set(held.meta["label_status"]) == {"ok"}
    pred = predict(mlip(DEMO / "mace_gfn2.model"), held.to_atoms())
    got = parity_metrics(reference_values(held), pred)
    # all its test cells: the errors it reports (README, closing note), recomputed here
    assert len(rows) == len(test_ids)
    for key in ("energy", "forces", "stress"):
        assert got[key]["mae"] == pytest.approx(reported[key]["mae"], rel=0.02), key
