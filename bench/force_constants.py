"""Finite-displacement force constants: capml's path (all displaced supercells of phonopy
in batched MACE calls, ``capml.simulation.phonons.force_constants``) vs the serial loop
(phonopy's displaced supercells one after another through mace's MACECalculator, as the
scripts and phonopy's own ASE examples do).

Same model (default: the local foundation data/demo/mace_gfn2.model, a single MACE,
float64), same phonopy displacements (0.01 A) of the end-member cells in the system's
2x2x2 supercell (40 atoms). Reported per end member: the number of displaced cells, the
median wall time of each path over ``--repeats`` (interleaved, after a warm-up) and their
ratio, and the largest difference of the two force-constant matrices (eV/A^2; they must
agree to rounding).

    python bench/force_constants.py
    python bench/force_constants.py --device cuda --supercell 3 --batch-size 8
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from capml.calculators.mlip import mlip
from capml.simulation.forces import make_evaluator
from capml.simulation.phonons import force_constants
from capml.simulation.phonopy_io import make_phonopy, to_ase_atoms
from capml.structures import System

ROOT = Path(__file__).resolve().parents[1]


def serial(unitcell, supercell, calc, distance: float):
    """Force constants by phonopy with one calculator call per displaced supercell."""
    ph = make_phonopy(unitcell, supercell)
    ph.generate_displacements(distance=distance)
    forces = []
    for cell in ph.supercells_with_displacements:
        atoms = to_ase_atoms(cell)
        atoms.calc = calc
        forces.append(atoms.get_forces())
    ph.forces = np.array(forces)
    ph.produce_force_constants()
    ph.symmetrize_force_constants()
    return ph


def batched(unitcell, supercell, calc, distance: float, dtype: str, batch_size):
    return force_constants(unitcell, lambda cells: make_evaluator(
        cells, lambda: calc, engine="batched", dtype=dtype, batch_size=batch_size),
        supercell_matrix=supercell, distance=distance)


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(ROOT / "data" / "demo" / "mace_gfn2.model"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    p.add_argument("--supercell", type=int, default=2, help="n of the n x n x n supercell")
    p.add_argument("--batch-size", type=int, default=None, help="cells per model call")
    p.add_argument("--distance", type=float, default=0.01, help="displacement, A")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    system = System.from_config(OmegaConf.load(ROOT / "configs" / "system" / "ag3sbri.yaml"))
    calc = mlip(args.model, device=args.device, dtype=args.dtype)
    supercell = [args.supercell] * 3
    print(f"model {args.model} ({args.device}, {args.dtype}), supercell {supercell}, "
          f"distance {args.distance} A, median of {args.repeats}")
    print(f"{'x':>3} {'cells':>6} {'serial s':>9} {'capml s':>9} {'ratio':>6} {'max |dFC|':>10}")
    for x in (0.0, 1.0):
        cell = system.parent(x)
        runs = {"serial": lambda c=cell: serial(c, supercell, calc, args.distance),
                "capml": lambda c=cell: batched(c, supercell, calc, args.distance, args.dtype,
                                                args.batch_size)}
        for fn in runs.values():  # warm-up
            fn()
        times, result = {k: [] for k in runs}, {}
        for _ in range(args.repeats):
            for name, fn in runs.items():
                seconds, result[name] = timed(fn)
                times[name].append(seconds)
        med = {k: statistics.median(v) for k, v in times.items()}
        diff = np.abs(result["capml"].force_constants - result["serial"].force_constants).max()
        n = len(result["capml"].supercells_with_displacements)
        print(f"{x:3.0f} {n:6d} {med['serial']:9.3f} {med['capml']:9.3f} "
              f"{med['serial'] / med['capml']:6.2f} {diff:10.2e}")


if __name__ == "__main__":
    main()
