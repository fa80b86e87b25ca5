"""Committee cost: an MD step with a K-member MACE committee vs one member, batched engine,
beside mace's own committee calculator (ASE Langevin, one replica after another).

The members are K copies of one potential file (default: the local foundation, a single MACE;
weights do not change the cost), gathered as a committee folder (member_<k>.model +
committee.json) and loaded with capml.calculators.mlip.mlip as ``calculator=mlip`` does.
``--replicas`` 40-atom Ag3SBr_xI_(1-x) cells at 300 K (dt 1 fs, friction 1e-3 /fs). A timing
is the difference between runs of 2 + ``--steps`` and 2 steps (set-up cancels); the median of
``--repeats``, the variants interleaved. Reported: ms per MD step (all replicas) and the ratio
to one member; an ideal committee costs K x one member (each member is one model call on the
shared batched graph) and the ratio shows what the shared graph and neighbour lists save.

    python bench/committee.py                       # K = 4, 4 replicas, CPU float64
    python bench/committee.py --members 2 4 8 --replicas 9 --device cuda
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from capml.calculators.mlip import mlip
from capml.simulation import md
from capml.simulation.forces import make_evaluator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from md import add_mace_arguments, ase_run, parse_quietly, structures


def committee_folder(model: Path, k: int, root: Path) -> Path:
    folder = root / f"committee_{k}"
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"member_{i}.model" for i in range(k)]
    for name in names:
        shutil.copyfile(model, folder / name)
    (folder / "committee.json").write_text(json.dumps({"members": names}))
    return folder


def capml_seconds(cells, build, steps: int, out: Path, dtype: str) -> float:
    """Seconds of ``steps`` batched MD steps of all cells (set-up cancelled)."""
    def run(n, tag):
        replicas = [md.Replica(f"r{k}", c, 300.0, seed=k) for k, c in enumerate(cells)]
        settings = md.LangevinSettings(n_steps=n, stride=10, log_interval_s=3600,
                                       flush_interval_s=3600)
        t0 = time.perf_counter()
        md.run(replicas, lambda s: make_evaluator(s, build, engine="batched", dtype=dtype),
               settings, out / tag, level="mace")
        return time.perf_counter() - t0
    stamp = f"{time.perf_counter_ns()}"
    return run(2 + steps, f"long{stamp}") - run(2, f"short{stamp}")


def ase_seconds(cells, calc, steps: int) -> float:
    return ase_run(cells, calc, 2 + steps) - ase_run(cells, calc, 2)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--members", type=int, nargs="+", default=[4])
    p.add_argument("--replicas", type=int, default=4)
    p.add_argument("--steps", type=int, default=5, help="timed MD steps")
    p.add_argument("--repeats", type=int, default=3)
    add_mace_arguments(p, "MACE .model file: the members are copies of it")
    args = parse_quietly(p, argv)
    tmp = Path(tempfile.mkdtemp(prefix="capml-bench-committee-"))
    cells = structures(args.replicas)
    variants = {"capml batched, 1 member": lambda: mlip(args.model, device=args.device,
                                                         dtype=args.dtype)}
    for k in args.members:
        folder = committee_folder(Path(args.model), k, tmp)
        variants[f"capml batched, {k} members"] = (
            lambda f=folder: mlip(f, device=args.device, dtype=args.dtype))
        variants[f"ASE + mace committee, {k}"] = (
            lambda f=folder: ("ase", mlip(f, device=args.device, dtype=args.dtype)))
    times = {name: [] for name in variants}
    for repeat in range(args.repeats + 1):  # the first round warms up
        for name, build in variants.items():
            probe = build()
            if isinstance(probe, tuple):
                seconds = ase_seconds(cells, probe[1], args.steps)
            else:
                seconds = capml_seconds(cells, build, args.steps, tmp, args.dtype)
            if repeat:
                times[name].append(seconds / args.steps)
    print(f"MACE {args.model}, {args.dtype}, device {args.device}, torch threads "
          f"{torch.get_num_threads()}; {args.replicas} replicas of 40 atoms, {args.steps} steps, "
          f"median of {args.repeats}")
    base = statistics.median(times["capml batched, 1 member"])
    print(f"{'variant':>28} {'ms/step':>9} {'x 1 member':>11}")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"{name:>28} {1e3 * med:9.1f} {med / base:11.2f}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
