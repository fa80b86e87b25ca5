"""Convergence check of the demo's DFT levels (GPAW PBEsol plane waves, GLLB-SC LCAO).

Two thermally displaced 40-atom cells of one composition are labeled with capml's own
labelers at each setting; every setting is compared with the tightest one of its series on
what the models learn: the energy difference between the two cells (meV/atom), forces
(meV/A), stress (meV/A^3) and the gap (meV). Results are appended to a CSV as they finish,
so a rerun only computes what is missing.

    python bench/dft_convergence.py --jobs 2          # ~1 h on 2 free cores
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

PBESOL = {"_target_": "capml.calculators.gpaw_dft.pbesol", "symbols": ["Ag", "S", "Br", "I"]}
GLLBSC = {"_target_": "capml.calculators.gpaw_dft.gllbsc", "symbols": ["Ag", "S", "Br", "I"]}

# series name -> (reference setting, settings compared with it); a setting is a labeler config
AG11 = {"setups": {"Ag": "11"}}
SERIES = {
    "PBEsol cutoff (eV), Gamma": (
        {**PBESOL, **AG11, "ecut": 600},
        [{**PBESOL, **AG11, "ecut": e} for e in (350, 400, 500)]),
    "GLLB-SC basis, Gamma": (
        {**GLLBSC, **AG11, "ecut": 600},
        [{**GLLBSC, **AG11}, {**GLLBSC, **AG11, "mode": "lcao", "basis": "dzp"},
         {**GLLBSC, **AG11, "mode": "lcao", "basis": "sz(dzp)"}]),
    "GLLB-SC k-points, 400 eV": (
        {**GLLBSC, **AG11, "kpts": [2, 2, 2]},
        [{**GLLBSC, **AG11}]),
    "PBEsol k-points, 400 eV": (
        {**PBESOL, **AG11, "ecut": 400, "kpts": [2, 2, 2]},
        [{**PBESOL, **AG11, "ecut": 400}]),
}


def key(setting: dict) -> str:
    return json.dumps(setting, sort_keys=True)


def label(args):
    setting, index, atoms = args
    os.environ["OMP_NUM_THREADS"] = "1"
    from hydra.utils import instantiate

    labeler = instantiate(setting)
    t0 = time.perf_counter()
    labels, _ = labeler(atoms)
    return {"setting": key(setting), "cell": index, "seconds": time.perf_counter() - t0,
            **{k: json.dumps(np.asarray(v).tolist()) for k, v in labels.items()}}


def cells(data_file: str, x: float, temperatures) -> list:
    from capml import data

    s = data.read(data_file)
    atoms = s.to_atoms()
    picked = []
    for t in temperatures:
        i = int(np.flatnonzero((s.meta["x"] == x) & (s.meta["temperature"] == t)
                               & (s.meta["method"] == "phonon"))[0])
        atoms[i].calc = None
        picked.append((i, atoms[i]))
    return picked


def table(rows: list[dict]) -> list[str]:
    by = {(r["setting"], int(r["cell"])): r for r in rows}
    out = ["| series | setting | dE(2-1) err meV/atom | F MAE / max meV/A | stress max meV/A^3 "
           "| gap err meV (cell 1, 2) | s per cell |", "|---|---|---|---|---|---|---|"]
    for name, (ref, tests) in SERIES.items():
        r = [by.get((key(ref), c)) for c in (0, 1)]
        if None in r:
            continue
        for t in tests:
            s = [by.get((key(t), c)) for c in (0, 1)]
            if None in s:
                continue
            changed = {k: v for k, v in t.items() if ref.get(k) != v}
            label = changed or "the calculator's defaults"  # e.g. GLLB-SC: plane waves, 400 eV
            out.append(f"| {name} | {label} | " + " | ".join(compare(r, s)) + " |")
        out.append(f"| {name} | reference {({k: v for k, v in ref.items() if k not in PBESOL})}"
                   f" | | | | | {np.mean([float(x['seconds']) for x in r]):.0f} |")
    return out


def compare(ref, test) -> list[str]:
    def get(row, k):
        return np.array(json.loads(row[k])) if row.get(k) else None

    n = len(get(ref[0], "forces")) if ref[0].get("forces") else 40
    cols = []
    if ref[0].get("energy"):
        de = [(get(b, "energy") - get(a, "energy")) for a, b in (ref, test)]
        cols.append(f"{1e3 * (de[1] - de[0]) / n:+.2f}")
        df = np.concatenate([get(t, "forces") - get(r, "forces") for r, t in zip(ref, test)])
        cols.append(f"{1e3 * np.abs(df).mean():.1f} / {1e3 * np.abs(df).max():.1f}")
        ds = np.concatenate([get(t, "stress") - get(r, "stress") for r, t in zip(ref, test)])
        cols.append(f"{1e3 * np.abs(ds).max():.2f}")
    else:
        cols += ["", "", ""]
    dg = [1e3 * (get(t, "band_gap") - get(r, "band_gap")) for r, t in zip(ref, test)]
    cols.append(f"{dg[0]:+.0f}, {dg[1]:+.0f}")
    cols.append(f"{np.mean([float(t['seconds']) for t in test]):.0f}")
    return cols


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="data/demo/low_gfn2.h5")
    p.add_argument("--x", type=float, default=0.5)
    p.add_argument("--temperatures", type=float, nargs=2, default=[300.0, 600.0])
    p.add_argument("--csv", default="bench/results/dft_convergence.csv")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--no-kpoints", action="store_true",
                   help="leave out the k-point series (the costly part)")
    p.add_argument("--series", nargs="+", default=None, metavar="NAME",
                   help="run only the series whose names contain one of these words")
    args = p.parse_args()
    for name in list(SERIES):
        if (args.no_kpoints and "k-points" in name) or (
                args.series and not any(w in name for w in args.series)):
            del SERIES[name]
    picked = cells(args.data, args.x, args.temperatures)
    path = Path(args.csv)
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = ["setting", "cell", "seconds", "energy", "forces", "stress", "band_gap"]
    rows = list(csv.DictReader(path.open())) if path.exists() else []
    done = {(r["setting"], int(r["cell"])) for r in rows}
    settings = {key(s): s for ref, tests in SERIES.values() for s in [ref, *tests]}
    # Cheap settings first: the k-point references cost ~8 Gamma-point calculations each.
    todo = sorted([(s, c, picked[c][1]) for k, s in settings.items() for c in (0, 1)
                   if (k, c) not in done], key=lambda job: list(job[0].get("kpts", [1])) > [1])
    print(f"cells {[i for i, _ in picked]} of {args.data} (x = {args.x}, T = "
          f"{args.temperatures} K); {len(todo)} calculations to do")
    with ProcessPoolExecutor(args.jobs) as pool:
        for row in pool.map(label, todo):
            new = not path.exists()
            with path.open("a", newline="") as f:
                w = csv.DictWriter(f, fieldnames=fields)
                if new:
                    w.writeheader()
                w.writerow(row)
                f.flush()
            rows.append(row)
            print(f"  {row['setting'][:90]} cell {row['cell']}: {row['seconds']:.0f} s",
                  flush=True)
    print("\n".join(table(rows)))


if __name__ == "__main__":
    main()
