"""Symmetry-distinct orderings: the paper's counts, orbit sizes checked against spglib,
seeded sampling above max_configs, and the enumerate task (relax, rank, resume)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import spglib
from helpers.systems import CU3X, with_cu3x
from omegaconf import OmegaConf

from capml import data as store
from capml.structures import System
from capml.structures.enumerate import (
    build,
    count_distinct,
    orbit,
    orderings,
    sublattice_permutations,
    system_permutations,
)
from capml.tasks import dispatch

# An EMT-computable analogue of the antiperovskite's halide sublattice: L1_2 Cu3X with
# X = Ag (x = 0) or Au (x = 1) on the cube corners (Pm-3m, site 1a), 2x2x2 -> 8 X sites.
PAPER_COUNTS = [1, 1, 3, 3, 6, 3, 3, 1, 1]


@pytest.fixture(scope="module")
def perms(system):
    return system_permutations(system)


def test_ag3sbri_counts_and_multiplicities(perms):
    assert perms.shape == (384, 8)  # Oh (48) x 8 lattice translations of the 2x2x2 supercell
    for k in range(9):
        enum = orderings(perms, k)
        assert enum.n_distinct == len(enum.orderings) == PAPER_COUNTS[k]
        assert count_distinct(perms, k) == PAPER_COUNTS[k]  # Burnside agrees
        assert sum(o.multiplicity for o in enum.orderings) == math.comb(8, k)
        assert not enum.sampled


def test_every_ordering_maps_to_exactly_one_representative(perms):
    for k in range(9):
        reps = {o.sites: o.multiplicity for o in orderings(perms, k).orderings}
        hits = dict.fromkeys(reps, 0)
        for combo in itertools.combinations(range(8), k):
            canonical = tuple(orbit(perms, combo)[0].tolist())
            hits[canonical] += 1  # KeyError if some ordering is not covered
        assert hits == reps


def test_multiplicity_is_group_order_over_spglib_stabiliser(system, perms):
    """|orbit| x |stabiliser| = |G|, with the stabiliser counted by spglib on the built
    structure (an independent symmetry search on the decorated supercell)."""
    for k in (2, 3, 4):
        for o in orderings(perms, k).orderings:
            atoms = build(system, o)
            parent = system.ordered_supercell(atoms.info["x"])
            np.testing.assert_allclose(atoms.cell.array, parent.cell.array)
            ops = spglib.get_symmetry((atoms.cell.array, atoms.get_scaled_positions(),
                                       atoms.numbers), symprec=1e-5)
            assert o.multiplicity * len(ops["rotations"]) == 384


def test_build_places_dopants_on_the_sublattice(system, perms):
    o = orderings(perms, 3).orderings[1]
    atoms = build(system, o)
    sites = system.sublattice_indices(atoms)
    symbols = np.array(atoms.get_chemical_symbols())
    assert sorted(np.flatnonzero(symbols == "Br")) == sorted(sites[list(o.sites)])
    assert atoms.info["x"] == 3 / 8
    np.testing.assert_allclose(np.diag(atoms.cell.array), 2 * (4.869 + 3 / 8 * (4.793 - 4.869)))


def test_sampling_above_max_configs_is_seeded_and_distinct():
    cfg = OmegaConf.create(CU3X)
    cfg.supercell = [3, 3, 3]  # 27 sites: 321 distinct orderings of 6 dopants
    perms = system_permutations(System.from_config(cfg))
    a = orderings(perms, 6, max_configs=20, rng=np.random.default_rng(1))
    b = orderings(perms, 6, max_configs=20, rng=np.random.default_rng(1))
    c = orderings(perms, 6, max_configs=20, rng=np.random.default_rng(2))
    assert a.sampled and a.n_distinct == count_distinct(perms, 6) > 20
    assert len(a.orderings) == 20 and a.orderings == b.orderings != c.orderings
    keys = {tuple(orbit(perms, o.sites)[0].tolist()) for o in a.orderings}
    assert len(keys) == 20  # pairwise inequivalent
    assert all(len(perms) % o.multiplicity == 0 for o in a.orderings)
    with pytest.raises(ValueError, match="seeded rng"):
        orderings(perms, 6, max_configs=20)


def test_sites_that_are_not_a_sublattice_are_rejected(system):
    atoms = system.ordered_supercell(0.0)
    with pytest.raises(ValueError, match="not closed"):
        sublattice_permutations(atoms, system.sublattice_indices(atoms)[:3])


def test_enumerate_task_relaxes_ranks_and_resumes(cfg_factory, tmp_path, caplog):
    cfg = with_cu3x(cfg_factory("simulate", "task=enumerate", "calculator=emt",
                                "task.compositions=[0.5]"))
    dispatch("simulate", cfg)
    data = store.read(tmp_path / "enumerated.h5")
    assert len(data) == 6 + 2  # six orderings at x = 0.5 plus both end members
    m = data.meta
    assert np.all(m["converged"] == 1) and np.all(m["max_force"] < 0.01)
    half = np.isclose(m["x"], 0.5)
    assert m["multiplicity"][half].sum() == 70
    e = data.labels["energy"]
    assert m["rank"][half][np.argmin(e[half])] == 0
    assert sorted(m["rank"][half]) == list(range(6))
    np.testing.assert_allclose(m["energy_per_fu"], e / 8)
    ends = ~half
    np.testing.assert_allclose(m["mixing_energy"][ends], 0.0, atol=1e-12)
    e0, e1 = e[np.isclose(m["x"], 0.0)][0] / 8, e[np.isclose(m["x"], 1.0)][0] / 8
    np.testing.assert_allclose(m["mixing_energy"][half], e[half] / 8 - 0.5 * (e0 + e1))
    ground = store.read(tmp_path / "ground_states.h5")
    assert len(ground) == 1 and ground.meta["x"][0] == 0.5 and ground.meta["rank"][0] == 0
    assert ground.labels["energy"][0] == e[half].min()
    counts = (tmp_path / "orderings.csv").read_text()
    assert "0.5,4,70,6,6,False,70,True" in counts
    caplog.set_level("INFO", logger="capml.tasks.enumerate")
    dispatch("simulate", cfg)  # resume: nothing left to relax
    assert "0 orderings to relax (8 already" in caplog.text
    again = store.read(tmp_path / "enumerated.h5")
    assert list(again.meta["id"]) == list(m["id"])
    np.testing.assert_array_equal(again.meta["rank"], m["rank"])


def test_rank_skips_failed_relaxations():
    from capml.data import StructureSet
    from capml.tasks.enumerate import rank

    data = StructureSet(
        n_atoms=np.ones(5, dtype=int), numbers=np.full(5, 29), positions=np.zeros((5, 3)),
        cell=np.tile(np.eye(3), (5, 1, 1)), pbc=np.ones((5, 3), dtype=bool),
        labels={"energy": np.array([0.0, -2.0, np.nan, -1.0, -8.0])},
        meta={"x": np.array([0.0, 0.5, 0.5, 0.5, 1.0])})
    out = rank(data, n_formula_units=2)
    assert list(out["rank"]) == [0, 0, -1, 1, 0]
    np.testing.assert_allclose(out["mixing_energy"][[1, 3]], [-1.0 + 2.0, -0.5 + 2.0])
    assert np.isnan(out["mixing_energy"][2])


def test_enumerate_task_records_failed_relaxations(cfg_factory, tmp_path, caplog, monkeypatch):
    """A calculator that fails for every x = 0.5 ordering: the task does not crash; the
    failures are rows with NaN energy, rank -1 and the error in relax_note; the composition
    is missing from ground_states.h5 with a logged error; the other compositions are ranked."""
    from ase.calculators.calculator import CalculationFailed
    from ase.calculators.emt import EMT

    import capml.tasks.enumerate as enumerate_task
    from capml.calculators.reference import Labeler

    class FailsAtHalf(EMT):
        def calculate(self, atoms=None, *args, **kwargs):
            if atoms is not None and (atoms.numbers == 79).sum() == 4:  # 4 Au of 8 sites
                raise CalculationFailed("SCF not converged in 250 cycles")
            super().calculate(atoms, *args, **kwargs)

    labeler = Labeler(level="emt", build=lambda **_: FailsAtHalf(), settings={},
                      properties=("energy", "forces", "stress"))
    monkeypatch.setattr(enumerate_task, "instantiate", lambda _: labeler)
    cfg = with_cu3x(cfg_factory("simulate", "task=enumerate", "calculator=emt",
                                "task.compositions=[0.5,1.0]"))
    caplog.set_level("INFO", logger="capml.tasks.enumerate")
    dispatch("simulate", cfg)
    data = store.read(tmp_path / "enumerated.h5")
    m, e = data.meta, data.labels["energy"]
    half = np.isclose(m["x"], 0.5)
    assert len(data) == 8 and half.sum() == 6
    assert np.all(np.isnan(e[half])) and np.all(np.isfinite(e[~half]))
    assert np.all(m["rank"][half] == -1) and np.all(m["rank"][~half] == 0)
    assert np.all(m["converged"][half] == 0)
    assert all(str(n).startswith("failed: default: SCF not converged") for n in m["relax_note"][half])
    assert "no successfully relaxed ordering at x = [0.5]" in caplog.text
    ground = store.read(tmp_path / "ground_states.h5")
    assert list(ground.meta["x"]) == [1.0]
    table = (tmp_path / "enumeration.csv").read_text()
    assert table.count("failed: default: SCF not converged") == 6


def test_unphysical_relaxations_are_kept_but_not_ranked(cfg_factory, tmp_path, caplog):
    """Closest contact below task.min_contact x the covalent radii sum: rows kept with
    their energy, rank -1, not a ground state; the check is applied at ranking time, so
    rerunning with another threshold re-ranks without relaxing again."""
    caplog.set_level("INFO", logger="capml.tasks.enumerate")
    cfg = with_cu3x(cfg_factory("simulate", "task=enumerate", "calculator=emt",
                                "task.compositions=[1.0]", "task.min_contact=1.2"))
    dispatch("simulate", cfg)
    data = store.read(tmp_path / "enumerated.h5")
    assert len(data) == 2 and np.all(np.isfinite(data.labels["energy"]))
    assert np.all(data.meta["rank"] == -1) and np.all(data.meta["contact_ratio"] < 1.2)
    assert str(data.meta["closest_contact"][0]).startswith("Cu-")
    assert "relaxed to an unphysical structure" in caplog.text
    assert len(store.read(tmp_path / "ground_states.h5")) == 0
    cfg = with_cu3x(cfg_factory("simulate", "task=enumerate", "calculator=emt",
                                "task.compositions=[1.0]", "task.min_contact=null"))
    dispatch("simulate", cfg)
    assert "0 orderings to relax (2 already" in caplog.text
    assert list(store.read(tmp_path / "enumerated.h5").meta["rank"]) == [0, 0]
    assert list(store.read(tmp_path / "ground_states.h5").meta["x"]) == [1.0]
