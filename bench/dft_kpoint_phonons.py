"""Gamma-point phonons of the cubic end members at the PBEsol level against its k-point grid.

The demo's PBEsol level samples the 40-atom (2x2x2) cell at the Gamma point only. For
displacements that repeat in every unit cell (the q = 0 modes) that equals the 5-atom cell on
a 2x2x2 grid, so the effect of the grid on the Gamma modes can be measured on the 5-atom
cell alone: force constants of its 1x1x1 "supercell" (``simulate.py task=force_constants
system.supercell=[1,1,1]``) at k = 2 (the level), 4 and 8 per axis (the paper's 12 per axis
is converged to 0.5 meV per formula unit), and, as a check of that equivalence, the q = 0
frequencies of the level's own 2x2x2 force constants (``data/demo/force_constants``).
Finished grids are not recomputed.

    python bench/dft_kpoint_phonons.py            # ~20 min on one core
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEMO_FC = ROOT / "data" / "demo" / "force_constants" / "gpaw-pbesol-pw_x{x}.yaml"
NAMES = {0: "Ag3SI", 1: "Ag3SBr"}


def optical_gamma_thz(path: Path) -> np.ndarray:
    """Ascending q = 0 frequencies of a force-constant file, the three acoustic ones
    (those nearest zero) left out."""
    from capml.simulation.phonons import frequencies_at
    from capml.simulation.phonopy_io import load_phonopy

    f = frequencies_at(load_phonopy(path), [[0, 0, 0]])[0]
    return np.sort(np.delete(f, np.argsort(np.abs(f))[:3]))


def compute(k: int, out: Path, ecut: float) -> None:
    if all((out / f"k{k}_x{x}.yaml").is_file() for x in NAMES):
        return
    cmd = [sys.executable, str(ROOT / "simulate.py"), "task=force_constants",
           "calculator=gpaw_pbesol", f"calculator.kpts=[{k},{k},{k}]", f"calculator.ecut={ecut}",
           "system.supercell=[1,1,1]", "system.x=1", f"task.prefix=k{k}", f"task.output_dir={out}",
           f"hydra.run.dir={out}/run_k{k}"]
    print("$", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kpts", type=int, nargs="+", default=[2, 4, 8])
    p.add_argument("--ecut", type=float, default=400.0, help="eV, the level's cutoff")
    p.add_argument("--out", default=str(ROOT / "outputs" / "bench_kpoint_phonons"))
    p.add_argument("--csv", default=str(ROOT / "bench" / "results" / "dft_kpoint_phonons.csv"))
    args = p.parse_args()
    out = Path(args.out)
    for k in args.kpts:
        compute(k, out, args.ecut)
    ref = max(args.kpts)
    print(f"\nGamma-point optical frequencies, ascending (THz; negative = imaginary), PBEsol "
          f"{args.ecut:g} eV; "
          f"'40-atom' = the demo level's 2x2x2 force constants at q = 0")
    table = []
    for x, name in NAMES.items():
        columns = {f"k = {k}": optical_gamma_thz(out / f"k{k}_x{x}.yaml") for k in args.kpts}
        if Path(str(DEMO_FC).format(x=x)).is_file():
            columns["40-atom"] = optical_gamma_thz(Path(str(DEMO_FC).format(x=x)))
        table += [{"x": x, "mode": i, **{c: f"{v[i]:.4f}" for c, v in columns.items()}}
                  for i in range(len(columns[f"k = {ref}"]))]
        print(f"\n{name} (x = {x})")
        print("| " + " | ".join(columns) + f" | k = {min(args.kpts)} - k = {ref} |")
        print("|" + "---|" * (len(columns) + 1))
        for row in zip(*columns.values()):
            diff = row[list(columns).index(f"k = {min(args.kpts)}")] - row[
                list(columns).index(f"k = {ref}")]
            print("| " + " | ".join(f"{v:+.3f}" for v in row) + f" | {diff:+.3f} |")
    Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
    with open(args.csv, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)


if __name__ == "__main__":
    main()
