"""Relaxations needed with symmetry reduction vs all C(n, k) orderings.

Counts for the system config (default: the 2x2x2 Ag3SBr_xI_(1-x) supercell, 8 halide
sites): the orderings the paper's scripts relax (every C(8, k)) against capml's
symmetry-distinct ones, with multiplicities. With ``--check`` both ways are run with
ASE's EMT on an L1_2 Cu3(Ag,Au) analogue (same Pm-3m corner sublattice, 8 sites):
all C(8, k) orderings are relaxed and their energies shown to fall on the distinct
orderings' energies (equivalent orderings relax to the same energy), with the time each
way takes.

    python bench/enumerate.py
    python bench/enumerate.py --check --k 4
"""

from __future__ import annotations

import argparse
import itertools
import math
import time
from pathlib import Path

import numpy as np
from ase.calculators.emt import EMT
from omegaconf import OmegaConf

from capml.simulation.relax import relax
from capml.structures import System
from capml.structures.enumerate import Ordering, build, orbit, orderings, system_permutations

ROOT = Path(__file__).resolve().parents[1]

CU3X = {"name": "Cu3Au_xAg_(1-x)", "supercell": [2, 2, 2],
        "sites": [{"label": "Cu", "species": "Cu", "frac": [0.5, 0.5, 0.0]},
                  {"label": "Cu", "species": "Cu", "frac": [0.5, 0.0, 0.5]},
                  {"label": "Cu", "species": "Cu", "frac": [0.0, 0.5, 0.5]},
                  {"label": "X", "species": "Ag", "frac": [0.0, 0.0, 0.0]}],
        "substitution": {"site": "X", "host": "Ag", "dopant": "Au"},
        "end_members": [{"x": 0.0, "a": 3.72}, {"x": 1.0, "a": 3.705}]}


def counts(system: System) -> None:
    t0 = time.perf_counter()
    perms = system_permutations(system)
    n = system.n_sublattice_sites
    print(f"{system.name}: {n} substituted sites, {len(perms)} space-group operations of the "
          "parent supercell")
    print(f"{'x':>6} {'k':>3} {'all C(n,k)':>11} {'distinct':>9} {'multiplicities':<28}")
    total_all = total_distinct = 0
    for k in range(n + 1):
        enum = orderings(perms, k, max_configs=10**9)
        mult = [o.multiplicity for o in enum.orderings]
        assert sum(mult) == math.comb(n, k)
        total_all += math.comb(n, k)
        total_distinct += enum.n_distinct
        print(f"{k / n:6.3f} {k:3d} {math.comb(n, k):11d} {enum.n_distinct:9d} "
              f"{' '.join(map(str, mult)):<28}")
    print(f"{'total':>10} {total_all:11d} {total_distinct:9d}  "
          f"({total_all / total_distinct:.1f}x fewer relaxations; "
          f"enumeration {time.perf_counter() - t0:.2f} s)")


def check(k: int) -> None:
    system = System.from_config(CU3X)
    perms = system_permutations(system)
    calc = EMT()
    distinct = orderings(perms, k).orderings
    t0 = time.perf_counter()
    e_distinct = {o.sites: relax(build(system, o), calc).energy for o in distinct}
    t_distinct = time.perf_counter() - t0
    t0 = time.perf_counter()
    worst = 0.0
    for combo in itertools.combinations(range(system.n_sublattice_sites), k):
        energy = relax(build(system, Ordering(combo, 0)), calc).energy
        canonical = tuple(orbit(perms, combo)[0].tolist())
        worst = max(worst, abs(energy - e_distinct[canonical]))
    t_all = time.perf_counter() - t0
    print(f"\nEMT check, Cu3(Ag,Au) with k = {k}: {len(distinct)} distinct relaxations in "
          f"{t_distinct:.1f} s vs {math.comb(system.n_sublattice_sites, k)} in {t_all:.1f} s "
          f"({t_all / t_distinct:.1f}x); "
          f"largest |E(ordering) - E(its distinct representative)| = {worst:.2e} eV")
    energies = np.array(list(e_distinct.values()))
    print("distinct energies (eV): " + " ".join(f"{e:.5f}" for e in energies))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--system", default=str(ROOT / "configs" / "system" / "ag3sbri.yaml"))
    p.add_argument("--check", action="store_true", help="relax both ways with EMT")
    p.add_argument("--k", type=int, default=4, help="dopant count for --check")
    args = p.parse_args(argv)
    counts(System.from_config(OmegaConf.load(args.system)))
    if args.check:
        check(args.k)


if __name__ == "__main__":
    main()
