"""MD throughput: capml's batched Langevin engine vs ASE Langevin + mace's MACECalculator.

Same MACE model on both sides (default: the local foundation, a single potential,
data/demo/mace_gfn2.model, loaded with capml.calculators.mlip.mlip as the simulate
tasks do; ``--model random``: a freshly initialised ScaleShiftMACE of ``--hidden``
irreps and ``--r-max``, as mace's own tests build it), same 40-atom
Ag3SBr_xI_(1-x) cells (seeded random orderings at x = 0, 1/8, ..., 1), same
Langevin settings (dt 1 fs, friction 1e-3 /fs, 300 K, Maxwell-Boltzmann start).
For 1 and for 9 replicas: ASE runs the replicas one after another (one
MACECalculator call per replica and step); capml advances all replicas together
with one batched model call per step and writes HDF5 trajectories (a frame every
10 steps). Reported: replica-steps per second, atom-steps per second and their
ratio. A timing is the difference between a run of 2 + ``--steps`` steps and one of 2
steps, so set-up (model loading, calculator and integrator construction, the first
force call, file creation) cancels; the median of ``--repeats`` after a warm-up, the two
engines' repeats interleaved.

    python bench/md.py                                   # CPU, float64, the local foundation
    python bench/md.py --model random --hidden "64x0e + 64x1o" --threads 2
    python bench/md.py --device cuda --dtype float32 --steps 200
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from ase import units
from ase.md.langevin import Langevin
from omegaconf import OmegaConf

from capml.calculators.mlip import mlip
from capml.simulation import md
from capml.simulation.forces import make_evaluator
from capml.structures import System

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from helpers.mace import build_mace


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


def add_mace_arguments(p: argparse.ArgumentParser, model_help: str) -> None:
    """--model (the local foundation by default), --dtype, --device, --threads."""
    p.add_argument("--model", default=str(ROOT / "data" / "demo" / "mace_gfn2.model"),
                   help=model_help)
    p.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def parse_quietly(p: argparse.ArgumentParser, argv) -> argparse.Namespace:
    """Parsed arguments; library warnings and logging silenced, torch threads set."""
    args = p.parse_args(argv)
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--replicas", type=int, nargs="+", default=[1, 9])
    p.add_argument("--steps", type=int, default=20, help="timed MD steps per replica")
    p.add_argument("--repeats", type=int, default=3)
    add_mace_arguments(p, "MACE .model file or mace_mp name; 'random': a fresh model")
    p.add_argument("--hidden", default="32x0e", help="MACE hidden irreps (--model random)")
    p.add_argument("--r-max", type=float, default=5.0, help="MACE cutoff, A (--model random)")
    args = parse_quietly(p, argv)
    tmp = Path(tempfile.mkdtemp(prefix="capml-bench-md-"))
    if args.model == "random":
        model_path = tmp / "bench.model"
        torch.save(build_mace([16, 35, 47, 53], r_max=args.r_max, hidden_irreps=args.hidden),
                   model_path)
        label = f"fresh MACE {args.hidden}, r_max {args.r_max} A"
    else:
        model_path, label = args.model, f"MACE {args.model}"

    def build():
        return mlip(str(model_path), device=args.device, dtype=args.dtype)

    calc = build()
    n_params = sum(p.numel() for p in calc.models[0].parameters())
    print(f"{label} ({n_params} parameters, r_max {float(calc.r_max):.1f} A), {args.dtype}, "
          f"device {args.device}, torch threads {torch.get_num_threads()}; 40-atom cells; "
          f"{args.steps} steps, median of {args.repeats}")
    print(f"{'replicas':>8} {'engine':>22} {'replica-steps/s':>15} {'atom-steps/s':>13} "
          f"{'ratio':>6}")
    for n in args.replicas:
        cells = structures(n)
        n_atoms = sum(len(c) for c in cells)
        ase_run(cells[:1], calc, 2)  # warm-up
        capml_run(cells, build, 2, tmp / f"warm{n}", args.dtype)
        t_ase, t_cap = [], []
        for k in range(args.repeats):  # interleaved, so that a changing machine load hits both
            t_ase.append(ase_run(cells, calc, 2 + args.steps) - ase_run(cells, calc, 2))
            t_cap.append(capml_run(cells, build, 2 + args.steps, tmp / f"n{n}r{k}l", args.dtype)
                         - capml_run(cells, build, 2, tmp / f"n{n}r{k}s", args.dtype))
        t_ase, t_cap = statistics.median(t_ase), statistics.median(t_cap)
        for name, t in (("ase Langevin+MACECalc", t_ase), ("capml batched", t_cap)):
            ratio = f"{t_ase / t:6.2f}" if name.startswith("capml") else f"{1.0:6.2f}"
            print(f"{n:>8} {name:>22} {n * args.steps / t:15.2f} "
                  f"{n_atoms * args.steps / t:13.0f} {ratio}")


if __name__ == "__main__":
    main()
