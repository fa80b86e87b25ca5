"""Shared fixtures: configs composed with Hydra, the demo system, small data sets."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
DEMO = ROOT / "data" / "demo"
os.environ.setdefault("CAPML_ROOT", str(ROOT))


def compose_cfg(config_name: str, overrides: list[str], output_dir: Path):
    """Compose an entry config as the entry point would, writing into output_dir."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name=config_name,
                      overrides=[f"paths.output_dir={output_dir}", *overrides])
    return cfg


def compose_train_with_hydra(*overrides):
    """The train config with its ``hydra`` node (launcher, sweeper), as a multirun sees it."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


@pytest.fixture
def cfg_factory(tmp_path):
    def make(config_name: str, *overrides: str):
        return compose_cfg(config_name, list(overrides), tmp_path)
    return make


@pytest.fixture(scope="session")
def demo_dir() -> Path:
    return DEMO


@pytest.fixture(scope="session")
def system():
    from capml.structures import System

    return System.from_config(OmegaConf.load(CONFIGS / "system" / "ag3sbri.yaml"))


@pytest.fixture
def small_set():
    """Three structures of different sizes with every label and some metadata."""
    from ase.build import bulk

    from capml.data import StructureSet

    rng = np.random.default_rng(0)
    atoms = [bulk("Cu", cubic=True) * (1, 1, 2), bulk("NaCl", "rocksalt", a=5.6), bulk("Si") * 2]
    for i, a in enumerate(atoms):
        a.positions += rng.normal(0, 0.05, a.positions.shape)
        from ase.calculators.singlepoint import SinglePointCalculator

        a.calc = SinglePointCalculator(a, energy=-1.5 * (i + 1), forces=rng.normal(size=(len(a), 3)),
                                       stress=rng.normal(size=6))
        a.info.update(band_gap=0.1 * i, method=["phonon", "uniform", "equilibrium"][i],
                      x=i / 8, temperature=[300.0, np.nan, np.nan][i], seed=i, id=f"t{i}")
    return StructureSet.from_atoms(atoms)


@pytest.fixture
def tiny_mace(tmp_path):
    """Factory of float64 MACE calculators of one untrained 8x0e model for S, Br, Ag, I
    (for tests that compare capml's batched engine with mace's own calculator)."""
    import torch
    from helpers.mace import build_mace

    from capml.utils.torch_compat import import_mace

    path = tmp_path / "tiny.model"
    torch.save(build_mace([16, 35, 47, 53], r_max=4.0, hidden_irreps="8x0e"), path)
    calculators = import_mace("mace.calculators")

    def mace():
        return calculators.MACECalculator(models=torch.load(path, weights_only=False),
                                          device="cpu", default_dtype="float64")
    return mace
