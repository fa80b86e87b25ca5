"""One validation layer for config values, run by the entry points before any compute.

Rules are declarative: a dotted key (``*`` matches every child of a mapping), a
predicate of the value (and the whole config, for cross-key rules) and what a valid
value is. Keys that a config does not have are skipped, so one rule set serves every
task; every violation is reported at once, naming the key, the value and the
expectation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf


class ConfigError(ValueError):
    """Config values that cannot work; the message names each key, value and expectation."""


@dataclass(frozen=True)
class Rule:
    key: str  # dotted path; "*" matches every child of a mapping
    valid: Callable[[Any, DictConfig], bool]
    expected: str | Callable[[DictConfig], str]
    allow_null: bool = False


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def positive(v, _cfg=None) -> bool:
    return _number(v) and v > 0


def non_negative(v, _cfg=None) -> bool:
    return _number(v) and v >= 0


def integer_at_least(low: int) -> Callable[[Any, DictConfig], bool]:
    return lambda v, _cfg=None: isinstance(v, int) and not isinstance(v, bool) and v >= low


def fraction(v, _cfg=None) -> bool:
    return _number(v) and 0 <= v < 1


def _is_step(v, cfg) -> bool:
    return v in cfg.stage.steps


def _steps_of(cfg) -> str:
    return f"the name of a step of stage {cfg.stage.get('name')!r}: one of {list(cfg.stage.steps)}"


TRAIN_RULES = (
    Rule("stage.steps.*.max_epochs", integer_at_least(1), "an integer >= 1 (epochs to train)"),
    Rule("stage.steps.*.lr", positive, "a learning rate > 0 (null: model.lr)", allow_null=True),
    Rule("stage.steps.*.batch_size", integer_at_least(1), "an integer >= 1 (null: "
         "data.batch_size)", allow_null=True),
    Rule("stage.steps.*.freeze_layers", integer_at_least(0), "an integer >= 0"),
    Rule("stage.optimize", _is_step, _steps_of),
    Rule("model.lr", positive, "a learning rate > 0"),
    Rule("model.weight_decay", non_negative, "a weight decay >= 0"),
    Rule("model.dropout", fraction, "a dropout probability in [0, 1)"),
    Rule("model.hidden", integer_at_least(1), "an integer >= 1 (channels)"),
    Rule("data.batch_size", integer_at_least(1), "an integer >= 1 (graphs per step)"),
    Rule("data.cutoff", positive, "a graph cutoff radius > 0 (A)"),
    Rule("data.min_labeled", integer_at_least(1), "an integer >= 1"),
    Rule("model.mace.lr", positive, "a learning rate > 0"),
    Rule("model.mace.max_num_epochs", integer_at_least(1), "an integer >= 1"),
)

SIMULATE_RULES = (
    Rule("task.timestep_fs", positive, "a time step > 0 (fs; the paper's is 1)"),
    Rule("task.duration_ps", non_negative, "a duration >= 0 (ps)"),
    Rule("task.friction_per_fs", non_negative, "a Langevin friction >= 0 (1/fs)"),
    Rule("task.stride", integer_at_least(1), "an integer >= 1 (steps between frames)"),
    Rule("task.n_jobs", integer_at_least(1), "an integer >= 1 (worker processes)"),
    Rule("task.cutoff_frequency", non_negative, "a frequency >= 0 (THz)"),
    Rule("task.fmax", positive, "a force threshold > 0 (eV/A)"),
)

RULES = {"train": TRAIN_RULES, "simulate": SIMULATE_RULES, "analyze": ()}


def _matches(node, parts: list[str], prefix: str) -> Iterator[tuple[str, Any]]:
    """(full key, value) of every node under ``node`` matching the dotted ``parts``."""
    if not parts:
        yield prefix, node
        return
    if not isinstance(node, DictConfig):
        return
    head, rest = parts[0], parts[1:]
    names = list(node.keys()) if head == "*" else [head] if head in node else []
    for name in names:
        child = "???" if OmegaConf.is_missing(node, name) else node[name]
        yield from _matches(child, rest, f"{prefix}.{name}" if prefix else str(name))


def violations(cfg: DictConfig, rules) -> list[str]:
    """One message per rule a config value breaks."""
    out = []
    for rule in rules:
        for key, value in _matches(cfg, rule.key.split("."), ""):
            if value == "???" or (value is None and rule.allow_null):
                continue
            if isinstance(value, (DictConfig, ListConfig)) or not rule.valid(value, cfg):
                expected = rule.expected(cfg) if callable(rule.expected) else rule.expected
                out.append(f"{key} = {value!r}: expected {expected}")
    return out


def compositions_in(cfg: DictConfig) -> list[tuple[str, float]]:
    """(key, x) of every composition the config asks for (system.x, task.compositions)."""
    out = []
    if isinstance(cfg.get("system"), DictConfig) and _number(cfg.system.get("x")):
        out.append(("system.x", float(cfg.system.x)))
    comps = cfg.task.get("compositions") if isinstance(cfg.get("task"), DictConfig) else None
    values = list(comps) if isinstance(comps, ListConfig) else [comps]
    out += [("task.compositions", float(v)) for v in values if _number(v)]
    return out


def composition_violations(cfg: DictConfig) -> list[str]:
    """Compositions the supercell of ``cfg.system`` cannot realise (unless round_x)."""
    pairs = compositions_in(cfg)
    if not pairs or cfg.get("round_x"):
        return []
    from capml.structures import System
    from capml.structures.system import SystemConfigError

    system = System.from_config(cfg.system)
    out = []
    for key, x in pairs:
        try:
            system.realisable(x)
        except SystemConfigError as err:
            out.append(f"{key}: {err}")
    return out


def check(cfg: DictConfig, entry: str) -> None:
    """Raise ConfigError listing every invalid value of an ``entry``-point config."""
    problems = violations(cfg, RULES[entry])
    if entry == "simulate":
        problems += composition_violations(cfg)
    if problems:
        raise ConfigError("invalid config values:\n  " + "\n  ".join(problems))


def check_entry(cfg: DictConfig, entry: str) -> None:
    """``check`` plus the task choice of simulate.py / analyze.py (ConfigError if unset)."""
    if entry != "train" and cfg.get("task") is None:
        from capml.tasks import TASKS

        raise ConfigError(f"no task chosen: give task=<name>, one of {sorted(TASKS[entry])} "
                          f"(python {entry}.py --help explains each)")
    check(cfg, entry)
