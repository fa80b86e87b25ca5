"""A test solid solution EMT can compute: Cu3Au_xAg_(1-x) on the L1_2 lattice."""

from __future__ import annotations

from omegaconf import OmegaConf, open_dict

CU3X = {"name": "Cu3Au_xAg_(1-x)", "x": 0.5, "supercell": [2, 2, 2],
        "sites": [{"label": "Cu", "species": "Cu", "frac": [0.5, 0.5, 0.0]},
                  {"label": "Cu", "species": "Cu", "frac": [0.5, 0.0, 0.5]},
                  {"label": "Cu", "species": "Cu", "frac": [0.0, 0.5, 0.5]},
                  {"label": "X", "species": "Ag", "frac": [0.0, 0.0, 0.0]}],
        "substitution": {"site": "X", "host": "Ag", "dopant": "Au"},
        "end_members": [{"x": 0.0, "a": 3.72}, {"x": 1.0, "a": 3.705}]}  # EMT minima


def with_cu3x(cfg):
    """A composed config with the Cu3X test system."""
    with open_dict(cfg):
        cfg.system = OmegaConf.create(CU3X)
    return cfg
