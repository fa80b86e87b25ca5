"""Harmonic phonons: EMT copper equals phonopy run by hand, the stability verdict
(acoustic modes at Gamma excluded), batched MACE force constants equal mace's
calculator, and the phonons task's outputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from conftest import DEMO
from helpers.systems import with_cu3x
from phonopy import Phonopy

from capml.simulation import phonons
from capml.simulation.forces import make_evaluator
from capml.simulation.phonopy_io import (
    full_force_constants,
    load_phonopy,
    to_ase_atoms,
    to_phonopy_atoms,
)
from capml.tasks import dispatch

Q = [[0.5, 0.0, 0.5], [0.5, 0.5, 0.5], [0.1, 0.2, 0.3], [0.0, 0.0, 0.0]]


def serial_emt_phonopy(unitcell, supercell_matrix, primitive_matrix) -> Phonopy:
    """The baseline: phonopy's own serial loop over displaced supercells with EMT."""
    ref = Phonopy(to_phonopy_atoms(unitcell), supercell_matrix=supercell_matrix,
                  primitive_matrix=primitive_matrix)
    ref.generate_displacements(distance=0.01)
    forces = []
    for cell in ref.supercells_with_displacements:
        atoms = to_ase_atoms(cell)
        atoms.calc = EMT()
        forces.append(atoms.get_forces())
    ref.forces = np.array(forces)
    ref.produce_force_constants()
    ref.symmetrize_force_constants()
    return ref


def emt_evaluator(cells):
    return make_evaluator(cells, EMT)


def test_emt_copper_equals_phonopy_by_hand():
    cu = bulk("Cu", "fcc", a=3.6)
    ours = phonons.force_constants(cu, emt_evaluator, supercell_matrix=[3, 3, 3],
                                   primitive_matrix="P", distance=0.01)
    ref = serial_emt_phonopy(cu, np.diag([3, 3, 3]), "P")
    np.testing.assert_allclose(ours.force_constants, ref.force_constants, atol=1e-10)
    f = phonons.frequencies_at(ours, Q)
    np.testing.assert_allclose(f, phonons.frequencies_at(ref, Q), atol=1e-8)
    np.testing.assert_allclose(f[3], 0.0, atol=1e-3)  # acoustic sum rule at Gamma
    assert 6.5 < f.max() < 9.0  # fcc Cu: longitudinal zone-boundary modes ~7-8 THz
    result = phonons.analyse(ours, mesh=[6, 6, 6])
    assert result["stability"].stable and result["bands"] is not None
    assert result["bands"]["labels"][0] == "$\\Gamma$"
    dos = result["dos"]
    area = np.sum(dos["dos"]) * (dos["frequencies"][1] - dos["frequencies"][0])
    assert area == pytest.approx(3.0, rel=0.03)  # three modes per atom of the primitive cell


def test_verdict_excludes_gamma_acoustic_modes_only():
    cu = phonons.force_constants(bulk("Cu", "fcc", a=3.6), emt_evaluator,
                                 supercell_matrix=[2, 2, 2], primitive_matrix="P")
    q = np.array([[0.0, 0.0, 0.0], [0.25, 0.0, 0.0]])
    acoustic_noise = np.array([[-0.3, -0.2, 0.1], [1.0, 1.0, 2.0]])
    assert phonons.stability(cu, q, acoustic_noise, tolerance=0.1).stable
    soft = np.array([[0.0, 0.0, 0.0], [-0.5, 1.0, 2.0]])
    verdict = phonons.stability(cu, q, soft, tolerance=0.1)
    assert not verdict.stable and verdict.n_imaginary == 1
    assert verdict.min_frequency == -0.5 and verdict.q_point == (0.25, 0.0, 0.0)
    assert verdict.band == 0 and verdict.character == {"Cu": pytest.approx(1.0)}


def test_gfn2_end_members_are_unstable_at_gamma():
    """The bundled GFN2-xTB force constants of Ag3SI and Ag3SBr (the paper finds
    imaginary branches at 0 K too): unstable, worst mode at Gamma, Ag-dominated."""
    for x, worst in ((0, -6.38), (1, -2.15)):
        ph = load_phonopy(DEMO / "force_constants" / f"gfn2-xtb_x{x}.yaml")
        verdict = phonons.analyse(ph, mesh=[4, 4, 4], npoints=11)["stability"]
        assert not verdict.stable
        assert verdict.min_frequency == pytest.approx(worst, abs=0.01)
        assert verdict.q_point == (0.0, 0.0, 0.0)
        assert max(verdict.character, key=verdict.character.get) == "Ag"
        assert "unstable" in verdict.summary()


def test_batched_mace_force_constants_equal_mace_calculator(system, tmp_path, tiny_mace):
    mace = tiny_mace
    parent = system.parent(1.0)
    kwargs = dict(supercell_matrix=[2, 1, 1], primitive_matrix="P")
    batched = phonons.force_constants(
        parent, lambda cells: make_evaluator(cells, mace, engine="batched", batch_size=2),
        **kwargs)
    serial = phonons.force_constants(
        parent, lambda cells: make_evaluator(cells, mace, engine="serial"), **kwargs)
    assert len(batched.supercells_with_displacements) > 2  # more than one model call
    np.testing.assert_allclose(batched.force_constants, serial.force_constants, atol=1e-9)


def test_phonons_task_writes_force_constants_verdict_and_figure(cfg_factory, tmp_path):
    cfg = with_cu3x(cfg_factory("simulate", "task=phonons", "calculator=emt",
                                "task.compositions=[1.0]", "task.mesh=[4,4,4]",
                                "task.npoints=11"))
    dispatch("simulate", cfg)

    table = pd.read_csv(tmp_path / "stability.csv")
    assert list(table["id"]) == ["x1.0000-random"]
    row = table.iloc[0]
    assert bool(row["stable"]) and row["level"] == "emt" and row["n_atoms"] == 32
    sub = tmp_path / "x1.0000-random"
    for name in ("phonopy.yaml", "band.yaml", "total_dos.dat", "band_dos.png"):
        assert (sub / name).stat().st_size > 0
    reloaded = load_phonopy(sub / "phonopy.yaml")
    assert len(reloaded.primitive) == 4  # ordered end member: the L1_2 parent cell
    assert phonons.frequencies_at(reloaded, [[0.5, 0.5, 0.5]]).min() > 0

    wrong = with_cu3x(cfg_factory("simulate", "task=phonons", "calculator=emt",
                                  f"task.input={tmp_path / 'nope.h5'}"))
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        dispatch("simulate", wrong)


def test_triclinic_cell_gets_gamma_and_mesh_only(tmp_path):
    cell = bulk("Cu", "fcc", a=3.6, cubic=True)
    cell.positions += np.random.default_rng(0).normal(0.0, 0.02, cell.positions.shape)
    ph = phonons.force_constants(cell, emt_evaluator, supercell_matrix=[2, 2, 2])
    assert ph.primitive_symmetry.dataset.number == 1
    result = phonons.analyse(ph, mesh=[2, 2, 2])
    assert result["bands"] is None and result["gamma"].shape == (12,)
    assert result["stability"].n_qpoints == 1 + len(result["dos"]["mesh_qpoints"])
    assert phonons.plot(result, tmp_path / "gamma.png").stat().st_size > 0


def test_a_failed_relaxation_does_not_abort_a_multi_structure_phonon_run(cfg_factory, tmp_path):
    """EMT has no potential for Li: that structure's relaxation fails in every settings
    variant; the run still computes the Cu cell's phonons and writes stability.csv."""
    from ase.io import write

    cu = bulk("Cu", "fcc", a=3.6, cubic=True)
    li = bulk("Li", "bcc", a=3.5, cubic=True)
    cu.info["id"], li.info["id"] = "cu", "li"
    write(tmp_path / "two.extxyz", [li, cu])
    cfg = with_cu3x(cfg_factory("simulate", "task=phonons", "calculator=emt",
                                f"task.input={tmp_path / 'two.extxyz'}", "task.select=null",
                                "task.compositions=all", "task.relax=true",
                                "task.supercell_matrix=[2,2,2]", "task.mesh=[4,4,4]",
                                "task.npoints=5"))
    dispatch("simulate", cfg)

    table = pd.read_csv(tmp_path / "stability.csv").set_index("id")
    assert list(table.index) == ["li", "cu"]
    assert table.loc["li", "verdict"].startswith("failed: ") and "Li" in table.loc["li", "verdict"]
    assert pd.isna(table.loc["li", "stable"]) and not (tmp_path / "li").exists()
    assert bool(table.loc["cu", "stable"]) and table.loc["cu", "n_displacements"] == 1
    assert (tmp_path / "cu" / "phonopy.yaml").stat().st_size > 0


def test_force_constants_task_equals_serial_phonopy_on_emt(cfg_factory, tmp_path):
    """task=force_constants (the batched engine path) writes the force constants that
    phonopy's own serial loop over displaced supercells gives with EMT."""
    cfg = with_cu3x(cfg_factory("simulate", "task=force_constants", "calculator=emt"))
    paths = dispatch("simulate", cfg)
    assert [p.name for p in paths] == ["emt_x0.yaml", "emt_x1.yaml"]
    from capml.structures import System

    system = System.from_config(cfg.system)
    for x, path in zip((0.0, 1.0), paths):
        ours = load_phonopy(path)
        ref = serial_emt_phonopy(system.parent(x), system.supercell, "auto")
        assert len(ours.supercell) == 32
        np.testing.assert_allclose(full_force_constants(ours), ref.force_constants,
                                   atol=1e-10)
        assert np.abs(ref.force_constants).max() > 1.0  # eV/A^2: a real, non-trivial matrix
        assert path.with_suffix(".png").stat().st_size > 0
    verdicts = pd.read_csv(paths[0].parent / "emt_stability.csv")
    assert list(verdicts["x"]) == [0.0, 1.0] and verdicts["verdict"].str.contains("stable").all()
