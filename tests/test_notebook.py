"""The demo walkthrough notebook runs end to end (notebooks/demo_walkthrough.ipynb).

It runs ``simulate.py experiment=demo`` and ``analyze.py experiment=demo_analysis`` at the
notebook's default "tiny" scale (x = 0, 0.3 ps of MD: about 1.5 minutes on two busy cores)
into a temporary folder and reads every output back.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "demo_walkthrough.ipynb"


def test_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


def test_demo_walkthrough_runs(tmp_path, monkeypatch):
    run_dir = tmp_path / "notebook"
    # the kernel inherits this environment, and the notebook's subprocesses the kernel's
    monkeypatch.setenv("CAPML_NOTEBOOK_SCALE", "tiny")
    monkeypatch.setenv("CAPML_NOTEBOOK_DIR", str(run_dir))
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()  # raises CellExecutionError with the failing cell's traceback

    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if "image/png" in o.get("data", {})]
    assert len(images) >= 6  # band/DOS, T_kin, spectra, gap series, thermal_gap, gamma modes

    sim, ana = run_dir / "simulation", run_dir / "analysis"
    for rel in ["enumerate/enumeration.csv", "phonons/stability.csv", "md"]:
        assert (sim / rel).exists(), rel
    assert list((sim / "md").glob("*_T300K.h5"))
    for rel in ["renormalised_phonons/stabilisation.csv", "thermal_gap/thermal_gap.csv",
                "thermal_gap/table_I.md", "gamma_modes/gamma_modes_summary.csv",
                "report/report.md"]:
        assert (ana / rel).exists(), rel
    report = (ana / "report" / "report.md").read_text()
    for section in ["## simulation", "## renormalised_phonons", "## thermal_gap",
                    "## gamma_modes"]:
        assert section in report
