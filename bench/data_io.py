"""Benchmark: `task=generate` for a few hundred cells, and reading a 10,000-structure data
set from capml's HDF5 vs the same data from extxyz with ase (the baseline way).

    python bench/data_io.py [--n-read 10000] [--n-generate 300] [--repeats 3]

Prints medians over repeats and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from ase.io import read as ase_read
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from capml import data as store
from capml.data.interchange import write_extxyz
from capml.sampling.generate import generate, load_end_members
from capml.structures import System


def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n-read", type=int, default=10000)
    p.add_argument("--n-generate", type=int, default=300)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()

    syscfg = OmegaConf.load(ROOT / "configs" / "system" / "ag3sbri.yaml")
    system = System.from_config(syscfg)
    demo = ROOT / "data" / "demo" / "force_constants"
    ends = load_end_members(OmegaConf.create({"x0": str(demo / "gfn2-xtb_x0.yaml"),
                                              "x1": str(demo / "gfn2-xtb_x1.yaml")}))
    per_comp = max(1, args.n_generate // (9 * 6))
    samples = [{"method": "phonon", "temperatures": [100, 200, 300, 400, 500, 600],
                "per_value": per_comp}]
    comps = [float(x) for x in system.compositions()]
    n_gen = len(comps) * 6 * per_comp
    t_gen = median_time(lambda: generate(system, samples, comps, 0, end_members=ends), args.repeats)
    print(f"generate: {n_gen} thermally displaced 40-atom cells in {t_gen:.2f} s "
          f"({n_gen / t_gen:.0f} cells/s, median of {args.repeats})")

    # A 10,000-structure labeled set: tile the generated cells and give them labels.
    base = generate(system, samples, comps, 1, end_members=ends)
    reps = int(np.ceil(args.n_read / len(base)))
    big = store.concat([base] * reps).subset(np.arange(args.n_read))
    rng = np.random.default_rng(0)
    big.labels = {"energy": rng.normal(size=len(big)),
                  "forces": rng.normal(size=(int(big.n_atoms.sum()), 3)),
                  "stress": rng.normal(size=(len(big), 6)),
                  "band_gap": rng.uniform(0, 3, size=len(big))}
    with tempfile.TemporaryDirectory() as tmp:
        h5 = store.write(Path(tmp) / "big.h5", big)
        xyz = write_extxyz(Path(tmp) / "big.xyz", big)
        t_h5 = median_time(lambda: store.read(h5), args.repeats)
        t_h5_atoms = median_time(lambda: store.read(h5).to_atoms(), args.repeats)
        t_xyz = median_time(lambda: ase_read(xyz, index=":"), args.repeats)
        size_h5, size_xyz = h5.stat().st_size / 1e6, xyz.stat().st_size / 1e6
    print(f"read {args.n_read} structures (40 atoms, energy/forces/stress/gap):")
    print(f"  capml HDF5 -> arrays       {t_h5:8.3f} s   ({size_h5:.1f} MB)")
    print(f"  capml HDF5 -> ase.Atoms    {t_h5_atoms:8.3f} s")
    print(f"  ase extxyz -> ase.Atoms    {t_xyz:8.3f} s   ({size_xyz:.1f} MB)")
    print(f"  ratio extxyz / HDF5 arrays: {t_xyz / t_h5:.0f}x; "
          f"extxyz / HDF5 Atoms: {t_xyz / t_h5_atoms:.1f}x")


if __name__ == "__main__":
    main()
