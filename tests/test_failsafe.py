"""Fail safe: full disks, killed training, nonsense config values, --help (issue 15).

Disk-full cases run in a subprocess inside a private mount namespace with a small
tmpfs (``unshare -m``); they skip with the reason where that is not permitted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from capml import data as store

ROOT = Path(__file__).resolve().parents[1]

# 32 Cu atoms, EMT, every frame flushed on its own (a new string heap per append), so a
# 700 KiB disk fills after some tens of frames.
MD_SCRIPT = """
import sys
from ase.build import bulk
from ase.calculators.emt import EMT
from capml.simulation import md
from capml.simulation.forces import make_evaluator
rep = md.Replica("cu", bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2), 400.0, seed=5)
settings = md.LangevinSettings(n_steps=400, stride=1, friction_per_fs=0.01,
                               log_interval_s=3600, flush_interval_s=0.0)
md.run([rep], lambda s: make_evaluator(s, EMT), settings, sys.argv[1], level="emt")
"""


def in_tmpfs(tmp_path: Path, size: str, body: str) -> subprocess.CompletedProcess:
    """Run shell ``body`` with $DISK a fresh tmpfs of ``size`` in a private mount
    namespace; skip where unshare/mount is not permitted."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare not installed: cannot make a small private disk")
    disk = tmp_path / "disk"
    disk.mkdir()
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=64k none {disk}"],
                           check=False, capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"private tmpfs not permitted here: {probe.stderr.strip()}")
    script = f"set -u\nmount -t tmpfs -o size={size} none {disk}\nDISK={disk}\n{body}"
    return subprocess.run(["unshare", "-m", "sh", "-c", script], check=False, capture_output=True,
                          text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)


def test_full_disk_during_md_keeps_frames_and_resumes_bit_identical(tmp_path):
    (tmp_path / "md.py").write_text(MD_SCRIPT)
    py = f"{sys.executable} {tmp_path / 'md.py'}"
    proc = in_tmpfs(tmp_path, "700k", textwrap.dedent(f"""
        {py} $DISK/md 2> {tmp_path}/err1.txt; echo $? > {tmp_path}/rc1
        cp $DISK/md/cu.h5 {tmp_path}/after_full.h5
        ls -a $DISK/md > {tmp_path}/listing
        mount -o remount,size=8m $DISK
        {py} $DISK/md 2> {tmp_path}/err2.txt; echo $? > {tmp_path}/rc2
        cp $DISK/md/cu.h5 {tmp_path}/resumed.h5
    """))
    assert proc.returncode == 0, proc.stderr
    err = (tmp_path / "err1.txt").read_text()
    assert (tmp_path / "rc1").read_text().strip() == "1", err  # a Python error, not 139
    assert "DiskFullError" in err and "md/cu.h5" in err and "bytes free" in err, err
    kept = store.read(tmp_path / "after_full.h5")  # every frame written before stays readable
    assert 10 < len(kept) < 400
    np.testing.assert_array_equal(kept.meta["step"], np.arange(len(kept)))
    assert (tmp_path / "listing").read_text().split() == [".", "..", "cu.h5"]  # no temp files
    assert (tmp_path / "rc2").read_text().strip() == "0", (tmp_path / "err2.txt").read_text()
    resumed = store.read(tmp_path / "resumed.h5")
    np.testing.assert_array_equal(resumed.positions[:kept.positions.shape[0]], kept.positions)
    subprocess.run([sys.executable, str(tmp_path / "md.py"), str(tmp_path / "ref")], check=True,
                   cwd=ROOT, capture_output=True)
    reference = store.read(tmp_path / "ref" / "cu.h5")  # the same run, never interrupted
    assert len(resumed) == len(reference) == 401
    np.testing.assert_array_equal(resumed.meta["rng_state"], reference.meta["rng_state"])
    # EMT's kept neighbour list sums in another order after a restart (see test_md)
    np.testing.assert_allclose(resumed.positions, reference.positions, rtol=0, atol=1e-9)


WRITE_SCRIPT = """
import sys, numpy as np
from capml import data as store
from capml.data import StructureSet
disk, what = sys.argv[1], sys.argv[2]
n, na = 400, 40
rng = np.random.default_rng(0)
big = StructureSet(n_atoms=np.full(n, na), numbers=np.tile(np.arange(1, na + 1), n),
                   positions=rng.random((n * na, 3)), cell=np.repeat(10 * np.eye(3)[None], n, 0),
                   pbc=np.ones((n, 3), bool), meta={"id": np.array([f"s{i}" for i in range(n)], dtype=object)})
if what == "write":
    store.write(f"{disk}/big.h5", big)
else:
    store.write(f"{disk}/set.h5", big.subset(range(10)))
    with open(f"{disk}/filler", "wb") as fh:  # leave less room than a forces label needs
        fh.write(b"0" * (store.store.free_bytes(disk) - 40_000))
    store.update_rows(f"{disk}/set.h5", [0], labels={"forces": [np.ones((na, 3))]})
"""


@pytest.mark.parametrize("what", ["write", "update_rows"])
def test_full_disk_write_and_label_raise_named_errors_and_leave_no_temp_files(tmp_path, what):
    (tmp_path / "w.py").write_text(WRITE_SCRIPT)
    proc = in_tmpfs(tmp_path, "300k", textwrap.dedent(f"""
        {sys.executable} {tmp_path / 'w.py'} $DISK {what}; echo $? > {tmp_path}/rc
        ls -a $DISK > {tmp_path}/listing
        [ -f $DISK/set.h5 ] && cp $DISK/set.h5 {tmp_path}/set.h5
        true
    """))
    rc = (tmp_path / "rc").read_text().strip()
    assert rc == "1", proc.stderr  # not 139 (segfault)
    target = "big.h5" if what == "write" else "set.h5"
    assert "DiskFullError" in proc.stderr and f"{target}: not enough free space" in proc.stderr
    assert "bytes free" in proc.stderr
    listing = (tmp_path / "listing").read_text().split()
    assert not [name for name in listing if name.endswith(".tmp")]  # nothing left behind
    if what == "update_rows":  # the file is unchanged and readable
        kept = store.read(tmp_path / "set.h5")
        assert len(kept) == 10 and "forces" not in kept.labels
