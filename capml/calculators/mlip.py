"""The machine-learned interatomic potential (MACE) as an ASE calculator.

``mlip(model=..., device=..., dtype=...)`` is the one factory every simulation task uses:
``model`` is a local ``.model`` file (e.g. the bundled ``data/demo/mace_gfn2.model`` or a
``train.py model=mace`` result) or a mace_mp foundation name ('medium-mpa-0', ...), which
needs internet unless it is already in mace's cache, or a committee: a folder holding
``committee.json`` (``{"members": ["member_0.model", ...]}``, as ``train.py -cn train_mace
model.committee=K`` writes it). A committee's energy, forces and stress are the member means;
``results["energy_spread"]`` (eV) and ``results["force_spread"]`` ([n] eV/A) beside them are
the std over members (capml.simulation.forces.committee_spread). ``labeler(...)`` wraps it as a
capml Labeler for the ``calculator`` config group (``calculator=mlip``).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from ase.calculators.calculator import Calculator, all_changes

from capml.calculators.reference import Labeler
from capml.models import mace as mace_models
from capml.utils.torch_compat import import_mace

MLIP_PROPERTIES = ("energy", "forces", "stress")
COMMITTEE_FILE = "committee.json"


def committee_manifest(model) -> tuple[Path, dict] | None:
    """``(path, contents)`` of the committee.json of a committee folder (or of that file
    itself), None for anything else; FileNotFoundError for a folder without one."""
    path = Path(str(model)).expanduser()
    manifest = path / COMMITTEE_FILE if path.is_dir() else path
    if manifest.name != COMMITTEE_FILE or not manifest.is_file():
        if path.is_dir():
            raise FileNotFoundError(f"{path} is a folder without {COMMITTEE_FILE}: expected a "
                                    "MACE .model file or a committee folder")
        return None
    return manifest, json.loads(manifest.read_text())


def committee_members(model) -> list[Path] | None:
    """Member files of a committee folder (or its committee.json), None for anything else.
    Raises ValueError for a manifest without members, FileNotFoundError for a missing one."""
    found = committee_manifest(model)
    if found is None:
        return None
    manifest, contents = found
    members = contents.get("members")
    if not isinstance(members, list) or not members:
        raise ValueError(f"{manifest}: key 'members' must list the member .model files")
    files = [manifest.parent / str(m) for m in members]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"{manifest}: member files {missing} do not exist")
    return files


def load_models(model, device: str = "cpu", dtype: str = "float64") -> list:
    """The torch modules of ``model``: one, or every member of a committee."""
    files = committee_members(model) or [model]
    return [mace_models.load(f, device=device, dtype=dtype) for f in files]


@cache
def _committee_class():
    """mace's MACECalculator plus the committee spread in its results (mace imported late)."""
    from capml.simulation.forces import committee_spread

    base = import_mace("mace.calculators").MACECalculator

    class CommitteeCalculator(base):
        def calculate(self, atoms=None, properties=None, system_changes=all_changes):
            super().calculate(atoms, properties, system_changes)
            if self.num_models > 1:
                spread = committee_spread(self.results["energy_comm"][:, None],
                                          self.results["forces_comm"])
                self.results["energy_spread"] = float(spread.energy[0])
                self.results["force_spread"] = spread.forces

    return CommitteeCalculator


def mlip(model, device: str = "cpu", dtype: str = "float64", head: str | None = None
         ) -> Calculator:
    """ASE calculator (energy eV, forces eV/A, stress eV/A^3) of a MACE model or committee.

    ``dtype`` 'float64' (phonons, relaxations, MD) or 'float32' (faster screening);
    ``head`` selects a head of a multi-head model (default: the fine-tuned 'Default').
    Raises FileNotFoundError for a missing file, ModelUnavailable for a foundation name
    that needs internet that is not there, ValueError for a bad device/dtype/name.
    """
    modules = load_models(model, device=device, dtype=dtype)
    kwargs = {"head": head} if head is not None else {}
    return _committee_class()(models=modules, device=device, default_dtype=dtype, **kwargs)


def spread_of(atoms, calculator) -> dict[str, float]:
    """Committee spread of ``calculator`` at ``atoms``: ``max_force_spread`` (largest per-atom
    force spread, eV/A) and ``energy_spread`` (eV); NaN (nothing computed) for a calculator
    that is not a committee. Relax, phonons and enumerate report it for final structures."""
    if getattr(calculator, "num_models", 1) < 2:
        return {"max_force_spread": float("nan"), "energy_spread": float("nan")}
    work = atoms.copy()
    work.calc = calculator
    work.get_potential_energy()
    return {"max_force_spread": float(calculator.results["force_spread"].max()),
            "energy_spread": float(calculator.results["energy_spread"])}


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
