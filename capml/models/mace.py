"""MACE models: find a model (a local file or a mace_mp foundation name), load it, describe it.

A MACE ``.model`` file is a whole pickled torch module (mace's own format), so it is opened
with an explicit ``torch.load(..., weights_only=False)``: load only model files you trust.
mace is imported through ``capml.utils.torch_compat.import_mace``.
"""

from __future__ import annotations

import urllib.error
from pathlib import Path

import torch

from capml.utils.torch_compat import import_mace

DTYPES = {"float32": torch.float32, "float64": torch.float64}
MODEL_SUFFIXES = (".model", ".pt", ".pth")


class ModelUnavailable(RuntimeError):
    """A mace_mp foundation model that is not cached here and could not be downloaded."""


def mace_mp_names() -> list[str]:
    """Names accepted by ``mace_mp(model=...)`` (e.g. 'medium-mpa-0', 'small')."""
    fm = import_mace("mace.calculators.foundations_models")
    return list(fm.mace_mp_urls)


def looks_like_path(model) -> bool:
    """True when ``model`` names a file rather than a mace_mp foundation name."""
    text = str(model)
    return (isinstance(model, Path) or "/" in text or "\\" in text
            or text.endswith(MODEL_SUFFIXES) or Path(text).expanduser().exists())


def resolve(model) -> Path:
    """Local file of ``model``: an existing model file, or the cached file of a mace_mp
    name, downloaded into mace's cache (``~/.cache/mace``) where internet exists.

    Raises FileNotFoundError for a missing file, ValueError for an unknown name and
    ModelUnavailable when a name is neither cached nor downloadable (no internet).
    """
    if model is None or str(model).strip() == "":
        raise ValueError("no MACE model given: expected a .model file path or a mace_mp name")
    if looks_like_path(model):
        path = Path(str(model)).expanduser().resolve()
        if not path.is_file():
            raise FileNotFoundError(f"MACE model file {path} does not exist (expected a "
                                    "file written by mace_run_train or `train.py model=mace`)")
        return path
    names = mace_mp_names()
    if model not in names:
        raise ValueError(f"'{model}' is neither an existing MACE model file nor a mace_mp "
                         f"foundation name (known names: {', '.join(names)})")
    fm = import_mace("mace.calculators.foundations_models")
    try:
        return Path(fm.download_mace_mp_checkpoint(model))
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        raise ModelUnavailable(
            f"mace_mp model '{model}' is not in mace's cache ({_cache_dir()}) and downloading "
            f"it from {fm.mace_mp_urls[model]} failed ({type(err).__name__}: {err}). Without "
            "internet, download the file on a connected machine and pass its path instead of "
            "the name (e.g. model.foundation=/path/to/mace-mpa-0-medium.model)") from err


def load(model, device: str = "cpu", dtype: str | None = "float64") -> torch.nn.Module:
    """The torch module of ``model`` (path or mace_mp name) on ``device``, cast to ``dtype``
    ('float32' | 'float64'; None keeps the file's dtype), in eval mode."""
    path = resolve(model)
    check_device(device)
    import_mace("mace.modules")  # the pickled classes live there
    module = torch.load(path, map_location=device, weights_only=False)
    if not isinstance(module, torch.nn.Module) or not hasattr(module, "r_max"):
        raise ValueError(f"{path} does not hold a MACE model (got {type(module).__name__})")
    if dtype is not None:
        module = module.to(check_dtype(dtype))
    return module.eval()


def check_dtype(dtype: str) -> torch.dtype:
    if dtype not in DTYPES:
        raise ValueError(f"dtype '{dtype}' is not supported (expected one of {sorted(DTYPES)};"
                         " use float64 for phonons and relaxations)")
    return DTYPES[dtype]


def check_device(device: str) -> None:
    kind = str(device).split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device '{device}' requested but torch sees no CUDA device "
                         "(use device=cpu)")
    if kind not in ("cpu", "cuda", "mps", "xpu"):
        raise ValueError(f"device '{device}' is not a torch device (expected cpu or cuda[:n])")


def describe(module: torch.nn.Module) -> dict:
    """Plain-data summary of a MACE model: cutoff (A), elements, architecture, heads, size."""
    su = import_mace("mace.tools.scripts_utils")
    conf = su.extract_config_mace_model(module)
    out = {
        "class": type(module).__name__,
        "r_max": float(module.r_max.item()),
        "atomic_numbers": [int(z) for z in module.atomic_numbers.tolist()],
        "heads": list(getattr(module, "heads", ["Default"])),
        "dtype": str(next(module.parameters()).dtype).replace("torch.", ""),
        "n_parameters": int(sum(p.numel() for p in module.parameters())),
    }
    if "error" not in conf:
        out.update(hidden_irreps=str(conf["hidden_irreps"]), max_ell=int(conf["max_ell"]),
                   num_interactions=int(conf["num_interactions"]),
                   correlation=int(conf["correlation"]) if "correlation" in conf else None)
    return out


def _cache_dir() -> Path:
    return import_mace("mace.tools.utils").get_cache_dir()
