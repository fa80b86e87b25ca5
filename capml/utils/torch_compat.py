"""Narrow fix for e3nn 0.4.4 under torch >= 2.6.

e3nn 0.4.4 (pinned by mace-torch 0.3.16) loads its bundled ``constants.pt`` with a
bare ``torch.load``; since torch 2.6 that defaults to ``weights_only=True`` and fails
with "Unsupported global: slice". We allow exactly ``slice`` as a safe global instead
of disabling weights-only loading for the whole process. mace's ``__init__`` sets
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` globally; ``import_mace`` removes it again, so
capml's own checkpoints keep torch's safe default and mace model files are loaded
with an explicit ``weights_only=False`` where they are opened.
"""

from __future__ import annotations

import importlib
import os

import torch

_ENV = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


def allow_e3nn_constants() -> None:
    torch.serialization.add_safe_globals([slice])


def import_mace(module: str = "mace"):
    """Import a mace module with the e3nn fix, without leaking mace's global override."""
    allow_e3nn_constants()
    had = _ENV in os.environ
    try:
        return importlib.import_module(module)
    finally:
        if not had:
            os.environ.pop(_ENV, None)
