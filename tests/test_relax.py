"""Relaxation: forces below fmax, a strained/rattled cubic crystal returns to cubic, the
relax task on structure files and HDF5 entries."""

from __future__ import annotations

import numpy as np
import pytest
import spglib
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.io import write
from helpers.systems import CU3X

from capml import data as store
from capml.data import DataError, StructureSet
from capml.simulation.relax import relax
from capml.structures import System
from capml.tasks import dispatch


def spacegroup(atoms, symprec=1e-3) -> str:
    return spglib.get_spacegroup((atoms.cell.array, atoms.get_scaled_positions(),
                                  atoms.numbers), symprec=symprec)


def strained(atoms, strain=(0.0, 0.0, 0.02)):
    out = atoms.copy()
    out.set_cell(out.cell.array @ np.diag(1.0 + np.asarray(strain)), scale_atoms=True)
    return out


@pytest.mark.parametrize("cell_filter", ["frechet", "unit"])
def test_rattled_strained_end_member_relaxes_back_to_cubic(cell_filter):
    """L1_2 Cu3Au (Pm-3m, EMT): tetragonal strain + rattled atoms; positions and cell
    relaxed -> forces below fmax and the cubic space group again."""
    start = strained(System.from_config(CU3X).parent(1.0))
    start.positions += np.random.default_rng(0).normal(0.0, 0.03, start.positions.shape)
    assert spacegroup(start) == "P1 (1)"
    res = relax(start, EMT(), fmax=0.01, relax_cell=True, cell_filter=cell_filter)
    assert res.converged and res.max_force < 0.01
    assert np.linalg.norm(res.atoms.get_forces(), axis=1).max() < 0.01
    assert spacegroup(res.atoms, symprec=1e-2) == "Pm-3m (221)"
    a, b, c = res.atoms.cell.lengths()
    assert abs(c - a) < 2e-3 and abs(b - a) < 2e-3
    start.calc = EMT()
    assert res.energy < start.get_potential_energy()


def test_internal_coordinates_only_keep_the_cell():
    cu = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 2)
    cu.positions += np.random.default_rng(1).normal(0.0, 0.05, cu.positions.shape)
    res = relax(cu, EMT(), fmax=0.005)
    assert res.converged and res.max_force < 0.005
    np.testing.assert_array_equal(res.atoms.cell.array, cu.cell.array)
    assert spacegroup(res.atoms, symprec=1e-2) == "Fm-3m (225)"
    assert set(res.atoms.calc.results) >= {"energy", "forces", "stress"}


def test_not_converged_is_reported_not_raised():
    cu = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 2)
    cu.positions += np.random.default_rng(2).normal(0.0, 0.1, cu.positions.shape)
    res = relax(cu, EMT(), fmax=1e-4, max_steps=2)
    assert not res.converged and res.n_steps == 2 and res.max_force > 1e-4


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="fmax"):
        relax(bulk("Cu"), EMT(), fmax=0.0)
    with pytest.raises(ValueError, match="cell_filter"):
        relax(bulk("Cu"), EMT(), relax_cell=True, cell_filter="nope")


def test_relax_task_on_a_structure_file_and_an_hdf5_entry(cfg_factory, tmp_path):
    rng = np.random.default_rng(3)
    cells = []
    for k in range(3):
        a = bulk("Cu", "fcc", a=3.6, cubic=True)
        a.positions += rng.normal(0.0, 0.04, a.positions.shape)
        a.info.update(id=f"cu{k}", x=k / 2)
        cells.append(a)
    write(tmp_path / "in.extxyz", cells)
    cfg = cfg_factory("simulate", "task=relax", "calculator=emt",
                      f"task.input={tmp_path / 'in.extxyz'}", "task.index=-1")
    dispatch("simulate", cfg)
    out = store.read(tmp_path / "relaxed.h5")
    assert len(out) == 1 and out.meta["method"][0] == "relaxed" and out.meta["level"][0] == "emt"
    assert out.meta["max_force"][0] < 0.01 and out.meta["converged"][0] == 1
    assert (tmp_path / "relaxed.extxyz").exists() and (tmp_path / "relax.csv").exists()

    store.write(tmp_path / "set.h5", StructureSet.from_atoms(cells))
    cfg = cfg_factory("simulate", "task=relax", "calculator=emt",
                      f"task.input={tmp_path / 'set.h5'}", "task.select={x: 0.5}",
                      f"task.output_dir={tmp_path / 'h5'}")
    dispatch("simulate", cfg)
    out = store.read(tmp_path / "h5" / "relaxed.h5")
    assert list(out.meta["id"]) == ["cu1"] and out.meta["x"][0] == 0.5

    bad = cfg_factory("simulate", "task=relax", "calculator=emt",
                      f"task.input={tmp_path / 'set.h5'}", "task.select={rank: 0}")
    with pytest.raises(DataError, match="set.h5.*rank"):
        dispatch("simulate", bad)
    missing = cfg_factory("simulate", "task=relax", "calculator=emt",
                          f"task.input={tmp_path / 'nope.h5'}")
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        dispatch("simulate", missing)


class _FailingEMT(EMT):
    """EMT whose calculations fail from the ``fail_from``-th one on (an SCF that stops
    converging along the relaxation path)."""

    def __init__(self, fail_from=1):
        super().__init__()
        self.fail_from, self.calls = fail_from, 0

    def calculate(self, *args, **kwargs):
        from ase.calculators.calculator import CalculationFailed

        self.calls += 1
        if self.calls >= self.fail_from:
            raise CalculationFailed("SCF not converged in 250 cycles")
        super().calculate(*args, **kwargs)


def test_relaxation_falls_back_to_other_settings_and_records_failures():
    from capml.calculators.reference import Labeler
    from capml.simulation.relax import (
        RelaxFailed,
        RelaxSettings,
        failed,
        relax_or_record,
        relax_with_fallbacks,
        relaxed_set,
    )

    starts = []

    class Recording(EMT):
        def calculate(self, atoms=None, *args, **kwargs):
            if not starts:
                starts.append(atoms.positions.copy())
            super().calculate(atoms, *args, **kwargs)

    def build(stable=False, fail_from=1):
        return Recording() if stable else _FailingEMT(fail_from)

    cu = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 1, 1)
    cu.positions[0] += 0.1
    reference = relax(cu, EMT(), fmax=0.01)
    labeler = Labeler(level="emt", build=build, settings={"fail_from": 3},
                      properties=("energy",), fallbacks=[{"stable": False}, {"stable": True}])
    res = relax_with_fallbacks(cu, labeler, RelaxSettings(fmax=0.01))
    assert res.converged and res.note == "fallback 2: {'stable': True}"
    # the working fallback went on from the geometry reached in 2 steps, not from the start
    assert not np.allclose(starts[0], cu.positions) and res.n_steps > 2
    assert res.energy == pytest.approx(reference.energy, abs=1e-4)
    hopeless = Labeler(level="emt", build=build, settings={}, properties=("energy",))
    with pytest.raises(RelaxFailed, match="SCF not converged"):
        relax_with_fallbacks(cu, hopeless)
    recorded = relax_or_record(cu, hopeless)
    assert failed(recorded) and np.isnan(recorded.energy)
    assert np.allclose(recorded.atoms.positions, cu.positions)  # the start structure
    data = relaxed_set([res, recorded], [cu, cu], "emt")
    assert np.isfinite(data.labels["energy"][0]) and np.isnan(data.labels["energy"][1])
    assert data.meta["relax_note"][1].startswith("failed: default: SCF") and data.meta["converged"][1] == 0


def test_one_relax_block_for_relax_enumerate_and_phonons(cfg_factory):
    """The relax keys come from configs/relax/default.yaml in every task that relaxes;
    a task overrides only what it must (enumerate and phonons keep the space group)."""
    from capml.simulation.relax import RelaxSettings

    got = {t: RelaxSettings.from_config(cfg_factory("simulate", f"task={t}",
                                                    "task.fmax=0.02").task)
           for t in ("relax", "enumerate", "phonons")}
    assert got["relax"] == RelaxSettings(fmax=0.02)
    assert got["enumerate"] == got["phonons"] == RelaxSettings(fmax=0.02, keep_symmetry=True)
    for bad, key in (({"cell_filter": "nope"}, "cell_filter"), ({"fmax": 0.0}, "fmax"),
                     ({"rattle": -0.1}, "rattle")):
        with pytest.raises(ValueError, match=f"relax: {key} = "):
            RelaxSettings(**bad)
