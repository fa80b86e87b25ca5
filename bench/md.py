"""MD throughput: capml's batched Langevin engine vs ASE Langevin + mace's MACECalculator.

Same MACE model (a freshly initialised ScaleShiftMACE built in-process, as mace's
own tests do, saved to a temporary file and loaded by both sides), same 40-atom
Ag3SBr_xI_(1-x) cells (seeded random orderings at x = 0, 1/8, ..., 1), same
Langevin settings (dt 1 fs, friction 1e-3 /fs, 300 K, Maxwell-Boltzmann start).
For 1 and for 9 replicas: ASE runs the replicas one after another (one
MACECalculator call per replica and step); capml advances all replicas together
with one batched model call per step and writes HDF5 trajectories (a frame every
10 steps). Reported: replica-steps per second, atom-steps per second and their
ratio. A timing is the difference between a run of 2 + ``--steps`` steps and one of 2
steps, so set-up (model loading, calculator and integrator construction, the first
force call, file creation) cancels; the median of ``--repeats`` after a warm-up.

    python bench/md.py                                   # CPU, float64, 32x0e model
    python bench/md.py --hidden "64x0e + 64x1o" --threads 2
    python bench/md.py --device cuda --dtype float32 --steps 200
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from ase import units
from ase.md.langevin import Langevin
from omegaconf import OmegaConf

from capml.simulation import md
from capml.simulation.forces import build_mace, make_evaluator
from capml.structures import System
from capml.utils.torch_compat import import_mace

ROOT = Path(__file__).resolve().parents[1]


def structures(n: int, seed: int = 0):
    system = System.from_config(OmegaConf.load(ROOT / "configs" / "system" / "ag3sbri.yaml"))
    rng = np.random.default_rng(seed)
    xs = system.compositions()
    return [system.random_solid_solution(xs[k % len(xs)], rng) for k in range(n)]


def ase_run(cells, calc, steps: int, temperature: float = 300.0) -> float:
    """Seconds for ``steps`` ASE Langevin steps of every cell, one cell after another."""
    t0 = time.perf_counter()
    for k, cell in enumerate(cells):
        atoms = cell.copy()
        atoms.calc = calc
        rng = np.random.default_rng(k)
        atoms.set_velocities(md.maxwell_boltzmann(atoms, temperature, rng) / units.fs)
        Langevin(atoms, 1.0 * units.fs, temperature_K=temperature, friction=1e-3 / units.fs,
                 fixcm=False, rng=rng).run(steps)
    return time.perf_counter() - t0


def capml_run(cells, build, steps: int, out_dir: Path, dtype: str,
              temperature: float = 300.0) -> float:
    """Seconds for ``steps`` steps of all cells together in capml's batched engine."""
    replicas = [md.Replica(f"r{k}", c, temperature, seed=k) for k, c in enumerate(cells)]
    settings = md.LangevinSettings(n_steps=steps, stride=10, log_interval_s=3600,
                                   flush_interval_s=3600)
    t0 = time.perf_counter()
    md.run(replicas, lambda s: make_evaluator(s, build, engine="batched", dtype=dtype),
           settings, out_dir, level="mace")
    return time.perf_counter() - t0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--replicas", type=int, nargs="+", default=[1, 9])
    p.add_argument("--steps", type=int, default=20, help="timed MD steps per replica")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--hidden", default="32x0e", help="MACE hidden irreps")
    p.add_argument("--r-max", type=float, default=5.0, help="MACE cutoff (A)")
    p.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = p.parse_args(argv)
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    calculators = import_mace("mace.calculators")
    tmp = Path(tempfile.mkdtemp(prefix="capml-bench-md-"))
    model_path = tmp / "bench.model"
    torch.save(build_mace([16, 35, 47, 53], r_max=args.r_max, hidden_irreps=args.hidden),
               model_path)

    def build():
        return calculators.MACECalculator(models=torch.load(model_path, weights_only=False),
                                          device=args.device, default_dtype=args.dtype)

    calc = build()
    print(f"MACE {args.hidden}, r_max {args.r_max} A, {args.dtype}, device {args.device}, "
          f"torch threads {torch.get_num_threads()}; 40-atom cells; {args.steps} steps, "
          f"median of {args.repeats}")
    print(f"{'replicas':>8} {'engine':>22} {'steps/s':>9} {'atom-steps/s':>13} {'ratio':>6}")
    for n in args.replicas:
        cells = structures(n)
        n_atoms = sum(len(c) for c in cells)
        ase_run(cells[:1], calc, 2)  # warm-up
        capml_run(cells, build, 2, tmp / f"warm{n}", args.dtype)
        t_ase = statistics.median(
            ase_run(cells, calc, 2 + args.steps) - ase_run(cells, calc, 2)
            for _ in range(args.repeats))
        t_cap = statistics.median(
            capml_run(cells, build, 2 + args.steps, tmp / f"n{n}r{k}l", args.dtype)
            - capml_run(cells, build, 2, tmp / f"n{n}r{k}s", args.dtype)
            for k in range(args.repeats))
        for name, t in (("ase Langevin+MACECalc", t_ase), ("capml batched", t_cap)):
            ratio = f"{t_ase / t:6.2f}" if name.startswith("capml") else f"{1.0:6.2f}"
            print(f"{n:>8} {name:>22} {n * args.steps / t:9.2f} "
                  f"{n_atoms * args.steps / t:13.0f} {ratio}")


if __name__ == "__main__":
    main()
