"""The machine-learned interatomic potential (MACE) as an ASE calculator.

``mlip(model=..., device=..., dtype=...)`` is the one factory every simulation task uses:
``model`` is a local ``.model`` file (e.g. the bundled ``data/demo/mace_demo.model`` or a
``train.py model=mace`` result) or a mace_mp foundation name ('medium-mpa-0', ...), which
needs internet unless it is already in mace's cache. ``labeler(...)`` wraps it as a capml
Labeler for the ``calculator`` config group (``calculator=mlip``).
"""

from __future__ import annotations

from ase.calculators.calculator import Calculator

from capml.calculators.reference import Labeler
from capml.models import mace as mace_models
from capml.utils.torch_compat import import_mace

MLIP_PROPERTIES = ("energy", "forces", "stress")


def mlip(model, device: str = "cpu", dtype: str = "float64", head: str | None = None
         ) -> Calculator:
    """ASE calculator (energy eV, forces eV/A, stress eV/A^3) of a MACE model.

    ``dtype`` 'float64' (phonons, relaxations, MD) or 'float32' (faster screening);
    ``head`` selects a head of a multi-head model (default: the fine-tuned 'Default').
    Raises FileNotFoundError for a missing file, ModelUnavailable for a foundation name
    that needs internet that is not there, ValueError for a bad device/dtype/name.
    """
    module = mace_models.load(model, device=device, dtype=dtype)
    calculators = import_mace("mace.calculators")
    kwargs = {"head": head} if head is not None else {}
    return calculators.MACECalculator(models=module, device=device, default_dtype=dtype,
                                      **kwargs)


def labeler(model, device: str = "cpu", dtype: str = "float64",
            properties=MLIP_PROPERTIES, level: str = "mace", head: str | None = None) -> Labeler:
    """A Labeler whose calculator is ``mlip(model, device, dtype, head)``."""
    bad = set(properties) - set(MLIP_PROPERTIES)
    if bad:
        raise ValueError(f"calculator '{level}': a MACE potential has no {sorted(bad)} "
                         f"(expected a subset of {MLIP_PROPERTIES})")
    return Labeler(level=level, build=mlip,
                   settings=dict(model=str(model), device=device, dtype=dtype, head=head),
                   properties=tuple(properties))
