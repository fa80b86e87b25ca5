"""``simulate.py task=enumerate``: symmetry-distinct orderings, relaxed and ranked.

For every composition x (``task.compositions``: a value, a list or "all") the
symmetry-distinct orderings of the substituted sublattice in the system's
supercell (all of them up to ``max_configs``, else ``max_configs`` seeded random
ones) are relaxed (BFGS to ``fmax``; internal coordinates, the cell too with
``relax_cell``; within the ordering's space group with ``keep_symmetry``) and ranked
by energy. Energies are reported per supercell, per
formula unit (parent cell) and as mixing energy per formula unit relative to the
relaxed end members (relaxed here as well when they are not among the
compositions and ``mixing_energy`` is on).

A relaxed ordering whose closest contact is shorter than ``min_contact`` times the
sum of the two atoms' covalent radii (e.g. Ag-I at 1.45 A, reached by a potential
outside its training data) is kept in the files with its energy but not ranked
(rank -1), like a failed relaxation, and cannot be a ground state or a mixing
energy reference.

Outputs in ``task.output_dir``: ``enumerated.h5`` (every relaxed ordering; meta
k, config, multiplicity, dopant_sites, converged, energy_per_fu, mixing_energy,
contact_ratio, closest_contact, rank = 0 for the lowest energy of its composition;
with a committee potential max_force_spread, eV/A, and energy_spread, eV, of the relaxed
ordering, NaN otherwise), ``ground_states.h5`` (the
rank-0 structure of each requested composition: the input of task=phonons and
task=md), ``enumeration.csv`` (one row per ordering) and ``orderings.csv``
(counts per composition). Relaxed orderings are appended as they finish; rerunning
the same command in the same output directory skips them.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from capml import data as store
from capml.calculators.mlip import spread_of
from capml.data import StructureSet
from capml.simulation.relax import RelaxSettings, describe, relax_or_record, relaxed_set
from capml.structures import System
from capml.structures.contacts import closest_contact
from capml.structures.enumerate import Ordering, build, orderings, system_permutations
from capml.structures.selection import compositions_of

log = logging.getLogger(__name__)


def plan(system: System, compositions, max_configs: int, seed: int, mixing_energy: bool,
         symprec: float = 1e-5):
    """Orderings to relax: {k: Enumeration}, for the requested compositions plus the
    end members when ``mixing_energy``. Random sampling at k draws from a generator
    seeded by (seed, k), so a composition's sample does not depend on the others."""
    perms = system_permutations(system, symprec)
    n = system.n_sublattice_sites
    ks = sorted({system.n_substituted(x) for x in compositions} |
                ({0, n} if mixing_energy else set()))
    return {k: orderings(perms, k, max_configs, np.random.default_rng([seed, k])) for k in ks}


def config_id(n_sites: int, k: int, index: int) -> str:
    return f"x{k / n_sites:.4f}-k{k}-c{index:03d}"


def rank(data: StructureSet, n_formula_units: int, valid=None) -> dict[str, np.ndarray]:
    """Per-structure energy per formula unit (eV), mixing energy (eV per formula
    unit, relative to the lowest valid x = 0 and x = 1 energies; NaN without them) and
    rank by energy within each composition among the ``valid`` rows (default: all)
    with an energy (0 = lowest, -1 = failed or not valid)."""
    e = data.labels.get("energy", np.full(len(data), np.nan)) / n_formula_units
    x = data.meta["x"]
    ok = np.isfinite(e) & (np.ones(len(data), bool) if valid is None else np.asarray(valid))
    ends = {}
    for end in (0.0, 1.0):
        hit = np.isclose(x, end) & ok
        ends[end] = e[hit].min() if hit.any() else np.nan
    mixing = e - (1.0 - x) * ends[0.0] - x * ends[1.0]
    ranks = np.full(len(data), -1, dtype=np.int64)  # -1: failed relaxation or not valid
    for value in np.unique(np.round(x, 10)):
        rows = np.flatnonzero(np.isclose(x, value) & ok)
        order = rows[np.argsort(e[rows], kind="stable")]
        ranks[order] = np.arange(len(order))
    return {"energy_per_fu": e, "mixing_energy": mixing, "rank": ranks}


def _contact(atoms) -> tuple[float, str]:
    hit = closest_contact(atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc)
    return (float("inf"), "") if hit is None else (hit.ratio, hit.describe())


def run(cfg: DictConfig) -> Path:
    t = cfg.task
    system = System.from_config(cfg.system)
    comps = compositions_of(system, t.compositions)
    n_sites = system.n_sublattice_sites
    enumerations = plan(system, comps, int(t.max_configs), int(cfg.seed),
                        bool(t.mixing_energy), float(t.symprec))
    out_dir = Path(t.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _counts_table(enumerations, comps, n_sites).to_csv(out_dir / "orderings.csv", index=False)
    path = out_dir / "enumerated.h5"
    done = set(store.read_meta(path, "id")) if path.exists() else set()
    jobs = [(k, i, o) for k, e in enumerations.items() for i, o in enumerate(e.orderings)
            if config_id(n_sites, k, i) not in done]
    log.info("%d orderings to relax (%d already in %s)", len(jobs), len(done), path)
    labeler = instantiate(cfg.calculator)
    calculator = labeler.calculator()  # for the committee spread of each relaxed ordering
    settings = RelaxSettings.from_config(t)
    config = OmegaConf.to_yaml(cfg, resolve=True)
    for j, (k, i, ordering) in enumerate(jobs):
        atoms = build(system, ordering)
        res = relax_or_record(atoms, labeler, settings, seed=int(cfg.seed) + 1000 * k + i)
        atoms.info.update(id=config_id(n_sites, k, i), seed=int(cfg.seed), source="enumerate")
        spread = {key: [v] for key, v in spread_of(res.atoms, calculator).items()}
        row = relaxed_set([res], [atoms], labeler.level, extra={
            **_ordering_meta(enumerations[k], ordering, i), **spread})
        store.append(path, row, config=config)
        log.info("[%d/%d] x = %.4f config %d (multiplicity %d): %s", j + 1, len(jobs),
                 k / n_sites, i, ordering.multiplicity, describe(res))
    data = store.read(path)
    contacts = [_contact(a) for a in data.to_atoms()]
    ratio = np.array([c[0] for c in contacts])
    min_contact = t.get("min_contact")
    valid = ratio >= float(min_contact) if min_contact else np.ones(len(data), bool)
    energy = data.labels.get("energy", np.full(len(data), np.nan))
    for i in np.flatnonzero(~valid & np.isfinite(energy)):
        log.warning("%s relaxed to an unphysical structure: closest contact %s < "
                    "task.min_contact = %s x the covalent radii sum (the potential is "
                    "outside its training data there): not ranked", data.meta["id"][i],
                    contacts[i][1], min_contact)
    ranked = rank(data, system.n_cells, valid)
    store.update_rows(path, np.arange(len(data)), meta={
        **ranked, "contact_ratio": ratio, "closest_contact": [c[1] for c in contacts]})
    data = store.read(path)
    wanted = np.isin(data.meta["k"], [system.n_substituted(x) for x in comps])
    ground = data.subset(np.flatnonzero(wanted & (data.meta["rank"] == 0)))
    realised = {round(system.n_substituted(x) / n_sites, 6) for x in comps}
    missing = sorted(realised - set(np.round(ground.meta.get("x", []), 6)))
    if missing:
        log.error("no successfully relaxed ordering at x = %s: not in ground_states.h5 "
                  "(see relax_note and closest_contact in %s)", missing, path)
    store.write(out_dir / "ground_states.h5", ground, config=config)
    table = _table(data)
    table.to_csv(out_dir / "enumeration.csv", index=False)
    log.info("enumeration (energies per formula unit, mixing energy in meV/f.u.):\n%s",
             table.to_string(index=False))
    return path


def _ordering_meta(enumeration, ordering: Ordering, index: int) -> dict:
    return {"k": [enumeration.k], "config": [index], "multiplicity": [ordering.multiplicity],
            "n_distinct": [enumeration.n_distinct], "sampled": [int(enumeration.sampled)],
            "dopant_sites": [" ".join(map(str, ordering.sites))]}


def _counts_table(enumerations, comps, n_sites):
    import pandas as pd

    wanted = {round(x * n_sites) for x in comps}
    return pd.DataFrame([{"x": k / n_sites, "k": k, "orderings": math.comb(n_sites, k),
                          "distinct": e.n_distinct, "relaxed": len(e.orderings),
                          "sampled": e.sampled, "multiplicity_sum":
                          sum(o.multiplicity for o in e.orderings),
                          "requested": k in wanted}
                         for k, e in sorted(enumerations.items())])


def _table(data: StructureSet):
    import pandas as pd

    m = data.meta
    table = pd.DataFrame({
        "x": m["x"], "k": m["k"], "config": m["config"], "multiplicity": m["multiplicity"],
        "energy_eV": data.labels.get("energy", np.full(len(data), np.nan)), "energy_per_fu_eV": m["energy_per_fu"],
        "mixing_meV_per_fu": 1000.0 * np.asarray(m["mixing_energy"], dtype=float),
        "rank": m["rank"], "converged": m["converged"], "n_steps": m["n_steps"],
        "max_force_eV_A": m["max_force"], "closest_contact": m["closest_contact"],
        "max_force_spread_eV_A": m.get("max_force_spread", np.full(len(data), np.nan)),
        "dopant_sites": m["dopant_sites"], "id": m["id"],
        "note": m["relax_note"]})
    last = table["rank"].where(table["rank"] >= 0, len(table))  # failed/unphysical last
    return (table.assign(_order=last).sort_values(["x", "_order", "config"])
            .drop(columns="_order").reset_index(drop=True))
