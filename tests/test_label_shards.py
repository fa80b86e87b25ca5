"""Sharded labeling: shards as separate Hydra jobs (joblib launcher), each writing its own
file, and a merge that checks ids, structures and calculator settings first."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.calculators.emt import EMT
from helpers.labeling import EMT_CFG, copper_set

from capml import data as store
from capml.calculators.labeling import label_file
from capml.calculators.shards import merge, shard_path
from capml.data import DataError
from capml.tasks import dispatch

ROOT = Path(__file__).resolve().parents[1]


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_two_shards_through_hydra_joblib_then_merge(tmp_path, cfg_factory):
    main = store.write(tmp_path / "cu.h5", copper_set(6))
    before = _sha(main)
    proc = subprocess.run(
        [sys.executable, "simulate.py", "-m", "task=label", "calculator=emt",
         f"task.input={main}", "task.shard=0,1", "task.n_shards=2", "hydra/launcher=joblib",
         "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={tmp_path / 'multirun'}"],
        check=False, cwd=ROOT, env={**os.environ, "CAPML_ROOT": str(ROOT)}, capture_output=True,
        text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _sha(main) == before  # the shards never write the main file
    for i in (0, 1):
        status = store.read_meta(shard_path(main, i, 2), "label_status")
        assert list(status == "ok") == [r % 2 == i for r in range(6)]  # its rows, only those
    counts = dispatch("simulate", cfg_factory("simulate", "task=merge", f"task.input={main}",
                                              "task.n_shards=2"))
    assert counts == {"merged": 6, "ok": 6, "failed": 0, "pending": 0}
    for atoms in store.read(main).to_atoms():  # the labels are EMT's, row by row
        ref = atoms.copy()
        ref.calc = EMT()
        assert atoms.get_potential_energy() == pytest.approx(ref.get_potential_energy())
        np.testing.assert_allclose(atoms.get_forces(), ref.get_forces(), atol=1e-12)
    assert "emt" in store.read_attrs(main)["calculators"]
    merged = _sha(main)
    assert merge(main, 2)["merged"] == 0 and _sha(main) == merged  # nothing new: untouched


def test_shards_partition_the_pending_rows(tmp_path):
    main = store.write(tmp_path / "cu.h5", copper_set(7))
    label_file(main, main, EMT_CFG, limit=2, shuffle_seed=None)  # rows 0, 1 done before
    done = []
    for i in range(3):
        counts = label_file(main, shard_path(main, i, 3), EMT_CFG, shard=(i, 3))
        assert counts["skipped"] == 2 and counts["ok"] + counts["other_shards"] == 5
        done.append(counts["ok"])
    assert done == [2, 1, 2]  # pending rows 2..6 by index mod 3: {3, 6}, {4}, {2, 5}
    assert merge(main, 3) == {"merged": 5, "ok": 7, "failed": 0, "pending": 0}


def test_merge_refuses_shards_that_disagree(tmp_path):
    with pytest.raises(DataError, match=r"merge: .*none.h5 does not exist"):
        merge(tmp_path / "none.h5", 2)
    main = store.write(tmp_path / "cu.h5", copper_set(4))
    with pytest.raises(DataError, match=r"missing shard files .*cu.shard-0-of-2.h5"):
        merge(main, 2)
    label_file(main, shard_path(main, 0, 2), EMT_CFG, shard=(0, 2))
    other = {**EMT_CFG, "properties": ["energy"]}  # same level name, other settings
    label_file(main, shard_path(main, 1, 2), other, shard=(1, 2))
    before = _sha(main)
    with pytest.raises(DataError, match=r"cu.shard-1-of-2.h5: calculator 'emt' settings differ"):
        merge(main, 2)
    store.write(shard_path(main, 1, 2), copper_set(4, seed=1))  # another data set's cells
    with pytest.raises(DataError, match=r"cu.shard-1-of-2.h5: structures .* differ"):
        merge(main, 2)
    assert _sha(main) == before
    with pytest.raises(ValueError, match="task.shard=2, task.n_shards=2"):
        label_file(main, main, EMT_CFG, shard=(2, 2))
