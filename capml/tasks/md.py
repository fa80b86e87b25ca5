"""``simulate.py task=md``: Langevin NVT of (structure, temperature) replicas.

Replicas are every starting structure (as for task=phonons: enumerate's
``ground_states.h5`` via ``task.input``, or a seeded random ordering per
composition) at every temperature of ``task.temperatures``. All replicas of a run
advance together; with a MACE calculator their forces come from one batched
model call per step (``engine: batched``/``auto``), otherwise from one ASE
calculation per replica. Many (x, T) points are run either in one job
(``task.temperatures=[100,300,600] task.compositions=all``) or as a Hydra
multirun (``-m system.x=0,0.5,1 task.temperatures=100,300,600``).

Each replica writes ``task.output_dir/<id>_T<T>K.h5`` (capml.simulation.trajectory
layout). Rerunning the same command with the same output directory
(``hydra.run.dir=<old run dir>``) resumes every replica from its last stored
frame; a longer ``duration_ps`` extends finished runs. Every replica's random
stream is seeded from (``seed``, replica name), independent of batching.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from capml.simulation import md
from capml.simulation.forces import EngineSettings, evaluator_factory
from capml.structures import System
from capml.structures.selection import Selection, structure_id, structures_for
from capml.utils.seeds import seed_of

log = logging.getLogger(__name__)


def temperatures_of(spec) -> list[float]:
    values = OmegaConf.to_container(spec) if OmegaConf.is_list(spec) else spec
    values = values if isinstance(values, (list, tuple)) else [values]
    try:
        temps = [float(v) for v in values]
    except (TypeError, ValueError) as err:
        raise ValueError(f"task.temperatures = {spec!r}: expected a number or a list of "
                         "numbers (K)") from err
    if not temps or min(temps) <= 0:
        raise ValueError(f"task.temperatures = {temps}: expected temperatures > 0 K")
    return temps


def replicas_for(cfg: DictConfig) -> list[md.Replica]:
    out = []
    starts = structures_for(System.from_config(cfg.system), Selection.from_config(cfg.task),
                            int(cfg.seed))
    for k, atoms in enumerate(starts):
        base = structure_id(atoms, k)
        for temp in temperatures_of(cfg.task.temperatures):
            name = f"{base}_T{temp:g}K"
            meta = {"x": float(atoms.info.get("x", np.nan)), "source": base}
            out.append(md.Replica(name=name, atoms=atoms, temperature=temp,
                                  seed=seed_of(cfg.seed, name), meta=meta))
    return out


def settings_of(t) -> md.LangevinSettings:
    n_steps = int(round(float(t.duration_ps) * 1000.0 / float(t.timestep_fs)))
    return md.LangevinSettings(
        timestep_fs=float(t.timestep_fs), friction_per_fs=float(t.friction_per_fs),
        n_steps=n_steps, stride=int(t.stride), zero_momentum=bool(t.zero_momentum),
        max_temperature_factor=float(t.max_temperature_factor),
        min_contact=float(t.min_contact), stress=bool(t.stress),
        max_uncertainty=None if t.get("max_uncertainty") is None else float(t.max_uncertainty),
        log_interval_s=float(t.log_interval_s), flush_interval_s=float(t.flush_interval_s))


def run(cfg: DictConfig) -> list[md.Outcome]:
    t = cfg.task
    settings = settings_of(t)
    replicas = replicas_for(cfg)
    labeler = instantiate(cfg.calculator)
    evaluator = evaluator_factory(labeler, EngineSettings.from_config(t))
    log.info("md: %d replicas (%s), %d steps of %g fs, friction %g /fs, frame every %d steps",
             len(replicas), ", ".join(r.name for r in replicas), settings.n_steps,
             settings.timestep_fs, settings.friction_per_fs, settings.stride)
    outcomes = md.run(replicas, evaluator, settings, Path(t.output_dir), level=labeler.level,
                      config=OmegaConf.to_yaml(cfg, resolve=True),
                      raise_on_blowup=bool(t.fail_on_blowup))
    for o in outcomes:
        rate = o.steps_run / o.wall_s if o.wall_s else float("nan")
        log.info("%s: %s at step %d (%d steps this run, %.1f steps/s) -> %s", o.name, o.status,
                 o.last_step, o.steps_run, rate, o.path)
    return outcomes
