"""Config values as plain Python: Hydra hands over DictConfig/ListConfig nodes."""

from __future__ import annotations

from omegaconf import OmegaConf


def plain(value):
    """``value`` as plain dicts/lists (interpolations resolved); other values unchanged."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
