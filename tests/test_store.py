"""HDF5 store: exact round trip, crash-safe append, validation with clear errors."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from capml import data as store
from capml.data import DataError, StructureSet


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_sets_equal(a: StructureSet, b: StructureSet):
    np.testing.assert_array_equal(a.n_atoms, b.n_atoms)
    np.testing.assert_array_equal(a.numbers, b.numbers)
    np.testing.assert_array_equal(a.positions, b.positions)  # bit-exact
    np.testing.assert_array_equal(a.cell, b.cell)
    np.testing.assert_array_equal(a.pbc, b.pbc)
    assert sorted(a.labels) == sorted(b.labels)
    for k in a.labels:
        np.testing.assert_array_equal(a.labels[k], b.labels[k])
    for k in a.meta:
        np.testing.assert_array_equal(a.meta[k], b.meta[k])


def test_round_trip_is_exact(tmp_path, small_set):
    path = store.write(tmp_path / "d.h5", small_set, config="seed: 1\n")
    back = store.read(path)
    assert_sets_equal(small_set, back)
    attrs = store.read_attrs(path)
    assert attrs["schema_version"] == 1 and attrs["config"] == "seed: 1\n"
    assert attrs["units"]["forces"] == "eV/Angstrom" and "ase" in attrs["packages"]


def test_atoms_round_trip(small_set):
    atoms = small_set.to_atoms()
    assert atoms[1].get_potential_energy() == pytest.approx(-3.0)
    assert atoms[2].info["band_gap"] == pytest.approx(0.2)
    assert atoms[0].info["method"] == "phonon"
    assert_sets_equal(small_set, StructureSet.from_atoms(atoms))


def test_select_subset_iterate(tmp_path, small_set):
    path = store.write(tmp_path / "d.h5", small_set)
    store.append(path, small_set)
    full = store.read(path)
    sel = full.select(method=["phonon", "equilibrium"])
    assert list(sel.meta["method"]) == ["phonon", "equilibrium"] * 2
    assert len(full.select(x=0.125)) == 2
    chunks = list(store.iterate(path, chunk_size=4))
    assert [len(c) for c in chunks] == [4, 2]
    assert_sets_equal(store.read_range(path, 1, 5), full.subset([1, 2, 3, 4]))
    with pytest.raises(DataError, match="no such metadata column"):
        full.select(colour="red")


def test_append_adds_new_keys_with_unknown_values(tmp_path, small_set):
    bare = small_set.subset([0])
    bare.labels, bare.meta = {}, {}
    path = store.write(tmp_path / "d.h5", bare)
    store.append(path, small_set)
    back = store.read(path)
    assert np.isnan(back.labels["energy"][0]) and back.labels["energy"][1] == -1.5
    assert back.meta["method"][0] == "" and back.meta["seed"][0] == -1
    assert list(back.has_label("forces")) == [False, True, True, True]


CRASH = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from capml import data as store
    from capml.data import store as impl
    path, n_ok = sys.argv[1], int(sys.argv[2])
    s = store.read(path)
    for k in range(n_ok):
        store.append(path, s.subset([0]))
    original = impl._append_rows
    def dying(f, data, start):  # rows written, count not yet bumped: then SIGKILL
        original(f, data, start)
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    impl._append_rows = dying
    store.append(path, s.subset([1, 2]))
""")


def test_append_after_crash_loses_only_rows_in_flight(tmp_path, small_set):
    path = store.write(tmp_path / "d.h5", small_set)
    proc = subprocess.run([sys.executable, "-c", CRASH, str(path), "3"], capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()
    survived = store.read(path)
    assert len(survived) == 3 + 3  # the three completed appends, not the killed one
    assert_sets_equal(survived.subset([3, 4, 5]),
                      StructureSet.subset(store.read(path), [0, 0, 0]))
    store.append(path, small_set)  # resumes: overwrites the orphaned rows
    back = store.read(path)
    assert len(back) == 9
    assert_sets_equal(back.subset([6, 7, 8]), small_set)


def _bad(small_set, kind) -> StructureSet:
    s = small_set.subset([0, 1, 2])
    if kind == "nan":
        s.positions[3, 1] = np.nan
    elif kind == "element":
        s.numbers[0] = 150
    elif kind == "counts":
        s.n_atoms[0] += 1
    elif kind == "shape":
        s.labels["forces"] = s.labels["forces"][:, :2]
    return s


@pytest.mark.parametrize("kind, key", [("nan", "positions"), ("element", "numbers"),
                                       ("counts", "numbers"), ("shape", "forces")])
def test_bad_input_errors_and_file_untouched(tmp_path, small_set, kind, key):
    path = store.write(tmp_path / "d.h5", small_set)
    before = digest(path)
    bad = _bad(small_set, kind)
    with pytest.raises(DataError, match=f"'{key}'"):
        store.write(path, bad)
    with pytest.raises(DataError, match=f"'{key}'"):
        store.append(path, bad)
    assert digest(path) == before
    assert not list(tmp_path.glob(".*.tmp")), "temporary file left behind"


def _corrupt(path, kind):
    with h5py.File(path, "a") as f:
        if kind == "missing":
            del f["positions"]
        elif kind == "shape":
            del f["cell"]
            f.create_dataset("cell", data=np.zeros((3, 3)))
        elif kind == "nan":
            f["positions"][0, 0] = np.nan
        elif kind == "element":
            f["numbers"][1] = 0
        elif kind == "counts":
            f["n_atoms"][0] = 1000
        elif kind == "schema":
            f.attrs["schema_version"] = 99


@pytest.mark.parametrize("kind, message", [
    ("missing", "missing key 'positions'"),
    ("shape", "key 'cell': expected shape"),
    ("nan", "key 'positions': expected finite"),
    ("element", "key 'numbers': unknown element"),
    ("counts", "key 'numbers': expected shape"),
    ("schema", "'schema_version' is 99, expected 1"),
])
def test_reader_names_file_and_problem(tmp_path, small_set, kind, message):
    path = store.write(tmp_path / "d.h5", small_set)
    _corrupt(path, kind)
    with pytest.raises(DataError) as err:
        store.read(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_missing_file_and_non_hdf5(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        store.read(tmp_path / "nope.h5")
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    with pytest.raises(DataError, match="junk.h5"):
        store.read(junk)


def test_update_rows_validates_before_writing(tmp_path, small_set):
    path = store.write(tmp_path / "d.h5", small_set)
    before = digest(path)
    with pytest.raises(DataError, match="'forces' of structure 1"):
        store.update_rows(path, [0, 1], labels={"forces": [np.zeros((8, 3)), np.zeros((3, 3))]})
    assert digest(path) == before
    store.update_rows(path, [1], labels={"band_gap": [2.5]}, meta={"label_status": ["ok"]})
    back = store.read(path)
    assert back.labels["band_gap"][1] == 2.5 and back.meta["label_status"][1] == "ok"
    assert back.meta["label_status"][0] == ""


def test_an_error_mid_append_shrinks_back_to_the_committed_rows(tmp_path, small_set,
                                                                monkeypatch):
    from capml.data import store as store_module

    path = store.write(tmp_path / "d.h5", small_set)
    real, calls = store_module._resize_write, []

    def fail_on_third(ds, start, values):
        calls.append(ds.name)
        if len(calls) == 3:
            raise OSError("simulated I/O error")
        return real(ds, start, values)

    monkeypatch.setattr(store_module, "_resize_write", fail_on_third)
    with pytest.raises(OSError, match="simulated"):
        store.append(path, small_set)
    monkeypatch.undo()
    with h5py.File(path) as f:  # nothing half-written is left past the committed rows
        assert f["n_atoms"].shape[0] == f["cell"].shape[0] == 3
        assert f["numbers"].shape[0] == f["positions"].shape[0] == int(small_set.n_atoms.sum())
    assert_sets_equal(store.read(path), small_set)
    assert store.append(path, small_set) == 6


def test_second_writer_is_refused_and_new_files_get_normal_permissions(tmp_path, small_set):
    old = os.umask(0o022)
    try:
        path = store.write(tmp_path / "d.h5", small_set)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # not mkstemp's 0600
    before = digest(path)
    with h5py.File(path, "a"):  # another writer holds the file
        with pytest.raises(DataError, match="open for writing by another process"):
            store.append(path, small_set)
    assert digest(path) == before


def test_guarded_writer_refuses_what_the_disk_cannot_hold(tmp_path, small_set, monkeypatch):
    """The free-space bound is checked before HDF5 opens the file (here: a filesystem
    without fallocate reporting 1 KiB free)."""
    import errno

    from capml.data import store as store_module

    path = store.write(tmp_path / "d.h5", small_set)
    before = digest(path)

    def no_fallocate(fd, offset, length):
        raise OSError(errno.EOPNOTSUPP, "not supported")

    monkeypatch.setattr(os, "posix_fallocate", no_fallocate)
    monkeypatch.setattr(store_module, "free_bytes", lambda p: 1024)
    with pytest.raises(store_module.DiskFullError, match=r"d\.h5: not enough free space to "
                       r"append 3 structures: needs about \d+ bytes, 1024 bytes free"):
        store.append(path, small_set)
    assert digest(path) == before
