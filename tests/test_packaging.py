"""pyproject.toml and requirements.txt declare the same packages: every pin of the tested set
lies in its declared range, and nothing the package imports is left undeclared."""

from __future__ import annotations

import ast
import sys

import tomllib
from conftest import ROOT
from packaging.requirements import Requirement

_STDLIB = set(sys.stdlib_module_names) | {"__future__"}
# pinned for reproducibility only: dependencies of declared packages
PIN_ONLY = {"matscipy"}


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.strip().lower()] = version.strip()
    return pins


def test_every_pin_is_declared_and_inside_its_range():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [Requirement(r) for r in project["dependencies"]]
    test = [Requirement(r) for r in project["optional-dependencies"]["test"]]
    pins = _pins()
    ranges = {r.name.lower(): r.specifier for r in declared + test}
    assert set(pins) - set(ranges) == PIN_ONLY
    assert set(ranges) <= set(pins)  # every declared package is pinned and tested
    for name, spec in ranges.items():
        assert spec.contains(pins[name]), f"{name}=={pins[name]} outside {spec}"
    runtime = {r.name.lower() for r in declared}
    assert {"pytest", "ruff", "dynaphopy"} <= set(ranges) - runtime  # test tools: the extra


def test_top_level_imports_of_the_package_are_declared():
    runtime = {Requirement(r).name.lower() for r in
               tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    module_of = {"pytorch-lightning": "pytorch_lightning", "torch-geometric": "torch_geometric",
                 "hydra-core": "hydra", "pyyaml": "yaml", "mace-torch": "mace"}
    provided = {module_of.get(name, name) for name in runtime}
    imports = set()
    for path in (ROOT / "capml").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imports |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                imports.add(node.module.split(".")[0])
    third_party = {m for m in imports if m not in _STDLIB and m != "capml"}
    assert third_party - provided <= {"gpaw"}  # gpaw: the optional extra
