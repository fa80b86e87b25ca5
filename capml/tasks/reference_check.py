"""``analyze.py task=reference_check``: the potential against the reference on its own MD.

``task.n_frames`` frames after ``task.equilibration_ps`` are drawn (seeded by ``seed``,
spread over the replicas of ``task.md_dir``) and written as ``frames.h5`` (a capml data set,
method=md, source = trajectory file and frame time) in the output directory; they are
labeled there with ``calculator`` through ``capml.calculators.labeling.label_file`` (so a
killed check resumes, rerun with ``hydra.run.dir=<same dir>``); then ``task.model`` (a
.model file or a committee folder) is compared with the labels
(``capml.analysis.reference_check.reference_errors``): ``reference_check.json`` (summary),
``frames.csv`` (per frame: energy error, force MAE, largest force error and, for a
committee, its largest force spread) and ``parity.png``.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from capml.analysis import reference_check as check
from capml.analysis.mlip_parity import parity_figure, reference_values
from capml.calculators.labeling import label_file
from capml.calculators.mlip import mlip
from capml.data import read, write
from capml.data.splits import labeled
from capml.simulation.trajectory import read_trajectories

log = logging.getLogger(__name__)

FRAMES_FILE = "frames.h5"


def run(cfg: DictConfig) -> dict:
    t = cfg.task
    out = Path(t.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    frames = out / FRAMES_FILE
    if not frames.exists():
        write(frames, drawn_frames(t, int(cfg.seed)),
              config=OmegaConf.to_yaml(cfg, resolve=True))
    counts = label_file(frames, frames, OmegaConf.to_container(cfg.calculator, resolve=True),
                        n_jobs=int(t.n_jobs), threads_per_job=t.get("threads_per_job"))
    log.info("labeling %s: %s", frames, counts)
    data = labeled(read(frames))
    if len(data) == 0:
        raise ValueError(f"{frames}: none of its {sum(counts.values())} drawn frames has "
                         "reference labels (energy, forces, stress); see meta/label_status")
    summary, rows, pred = check.reference_errors(data, mlip(t.model, device=t.device,
                                                            dtype=t.dtype))
    summary.update(md_dir=str(t.md_dir), model=str(t.model), level=str(cfg.calculator.level),
                   n_drawn=len(read(frames)))
    (out / "reference_check.json").write_text(json.dumps(summary, indent=2))
    write_rows(out / "frames.csv", rows)
    parity_figure(reference_values(data), {"potential": pred},
                  {"potential": summary["parity"]}).savefig(out / "parity.png", dpi=150)
    p = summary["parity"]
    log.info("%d MD frames vs %s: energy MAE %.2f meV/atom (%.2f with the mean offset %.2f "
             "removed), force MAE %.1f meV/A, largest force error %.3f eV/A, spread-error "
             "Spearman %.2f", len(data), cfg.calculator.level, p["energy"]["mae"],
             p["energy_relative"]["mae"], p["energy_relative"]["offset"], p["forces"]["mae"],
             summary["max_force_error_eV_A"], summary["spread_error_spearman"])
    return summary


def drawn_frames(t, seed: int):
    """The frames to check, drawn from the trajectories of ``t.md_dir``."""
    md_dir = Path(str(t.md_dir))
    if not md_dir.is_dir():
        raise FileNotFoundError(f"task.md_dir = {md_dir}: no such folder (expected the md/ "
                                "folder of a simulate.py task=md or experiment=demo run)")
    trajs = read_trajectories(md_dir, include_blown_up=bool(t.include_stopped))
    picks = check.draw_frames([tr.times_fs for tr in trajs], int(t.n_frames),
                              float(t.equilibration_ps), seed)
    if len(picks) < int(t.n_frames):
        log.warning("%s: only %d frames after %g ps (task.n_frames = %d)", md_dir, len(picks),
                    float(t.equilibration_ps), int(t.n_frames))
    return check.frames_as_set(trajs, picks)


def write_rows(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
