"""Radius-graph construction: capml (vesin neighbour lists, collated arrays) vs the
original scripts' way, a Python loop over atom pairs and the 27 neighbouring cell images.

    python bench/graphs.py [--cells 1000] [--baseline-cells 1000] [--cutoff 5.5]

Both sides build the same edges (checked against ase.neighborlist on the first cells)
from 40-atom Ag3SBr_xI_(1-x) cells with 0.1 A uniform displacements, seeded. The
baseline can be timed on a subset (--baseline-cells) and is then scaled per cell.
"""

from __future__ import annotations

import argparse
import itertools
import math
import time
from pathlib import Path

import numpy as np
from ase.neighborlist import neighbor_list
from omegaconf import OmegaConf

from capml.data import StructureSet
from capml.graphs import build_edges, element_table, node_features
from capml.sampling import uniform
from capml.structures import System

ROOT = Path(__file__).resolve().parents[1]


def python_loop_edges(positions, cell, cutoff):
    """Edges (i, j, d) by looping over every atom pair and the 27 nearest cell images
    (valid while the cutoff is below the cell's perpendicular widths)."""
    pos = [tuple(p) for p in np.asarray(positions, dtype=float)]
    shifts = [tuple(np.dot(s, cell)) for s in itertools.product((-1, 0, 1), repeat=3)]
    zero = shifts.index((0.0, 0.0, 0.0))
    out = []
    for i, (xi, yi, zi) in enumerate(pos):
        for j, (xj, yj, zj) in enumerate(pos):
            for k, (sx, sy, sz) in enumerate(shifts):
                if i == j and k == zero:
                    continue
                d = math.sqrt((xj + sx - xi) ** 2 + (yj + sy - yi) ** 2 + (zj + sz - zi) ** 2)
                if d < cutoff:
                    out.append((i, j, d))
    return out


def cells(n: int, seed: int = 0):
    system = System.from_config(OmegaConf.load(ROOT / "configs" / "system" / "ag3sbri.yaml"))
    rng = np.random.default_rng(seed)
    comps = system.compositions()
    return [uniform(system.random_solid_solution(comps[k % len(comps)], rng), 0.1, rng)
            for k in range(n)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=1000)
    ap.add_argument("--baseline-cells", type=int, default=1000)
    ap.add_argument("--cutoff", type=float, default=5.5)
    args = ap.parse_args()
    atoms = cells(args.cells)
    data = StructureSet.from_atoms(atoms)
    table = element_table()
    # correctness of both sides on the first cells
    for a in atoms[:3]:
        ref = len(neighbor_list("i", a, args.cutoff))
        mine = int(build_edges(StructureSet.from_atoms([a]), args.cutoff).n_edges[0])
        loop = len(python_loop_edges(a.positions, a.cell.array, args.cutoff))
        assert ref == mine == loop, (ref, mine, loop)
    t0 = time.perf_counter()
    edges = build_edges(data, args.cutoff)
    node_features(data.numbers, table)
    t_capml = time.perf_counter() - t0
    n_base = min(args.baseline_cells, len(atoms))
    t0 = time.perf_counter()
    for a in atoms[:n_base]:
        python_loop_edges(a.positions, a.cell.array, args.cutoff)
        node_features(a.numbers, table)
    t_base = (time.perf_counter() - t0) * len(atoms) / n_base
    scaled = "" if n_base == len(atoms) else f" (timed on {n_base} cells, scaled)"
    print(f"graphs of {len(atoms)} cells of {len(atoms[0])} atoms, cutoff {args.cutoff} A, "
          f"{edges.index.shape[1] / len(atoms):.0f} edges per cell")
    print(f"  capml (vesin):        {t_capml:8.2f} s  {t_capml / len(atoms) * 1e3:8.3f} ms/cell")
    print(f"  Python-loop baseline: {t_base:8.2f} s  {t_base / len(atoms) * 1e3:8.3f} ms/cell"
          f"{scaled}")
    print(f"  speed-up: {t_base / t_capml:.0f}x")


if __name__ == "__main__":
    main()
