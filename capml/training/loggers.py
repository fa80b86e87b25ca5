"""Experiment loggers per training step: CSV, or Weights & Biases (offline by default).

W&B runs are grouped by the Hydra run (single run) or by the sweep (multirun),
named after the step, and finished after each step so multirun jobs never merge.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.utils import instantiate

log = logging.getLogger(__name__)


def run_group() -> str:
    """Name of the sweep directory in multirun jobs, of the run directory otherwise."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return "capml"
    hc = HydraConfig.get()
    if hc.mode == RunMode.MULTIRUN:
        return Path(hc.sweep.dir).name
    return Path(hc.runtime.output_dir).name


def job_name(step: str) -> str:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return f"{step}-job{HydraConfig.get().job.num}"
    return step


def make_logger(logger_cfg, step: str, save_dir: Path, hparams: dict):
    """Logger of one training step (or False when ``logger`` is null)."""
    if not logger_cfg:  # null or logger=none
        return False
    target = str(logger_cfg.get("_target_", ""))
    if target.endswith("WandbLogger"):
        logger = instantiate(logger_cfg, name=job_name(step), save_dir=str(save_dir),
                             group=logger_cfg.get("group") or run_group(), job_type=step)
    else:
        logger = instantiate(logger_cfg, name=step, save_dir=str(save_dir))
    logger.log_hyperparams(hparams)
    return logger


def is_wandb(logger) -> bool:
    return type(logger).__name__ == "WandbLogger"


def log_images(logger, images: dict[str, Path]) -> None:
    """Parity plots and histograms as W&B images (other loggers keep them as files)."""
    if is_wandb(logger):
        for key, path in images.items():
            logger.log_image(key=key, images=[str(path)])


def log_checkpoint(logger, checkpoint, step: str, metrics: dict) -> None:
    """The best checkpoint as a W&B model artifact (kept locally in offline mode and
    uploaded by ``wandb sync``; Lightning's own log_model refuses offline runs)."""
    if is_wandb(logger) and Path(checkpoint).is_file():
        import wandb

        art = wandb.Artifact(f"gnn-{step}-{logger.experiment.id}", type="model",
                             metadata={k: v for k, v in metrics.items()})
        art.add_file(str(checkpoint), name="best.ckpt")
        logger.experiment.log_artifact(art, aliases=["best"])


def finish(logger) -> None:
    """Close the W&B run of a step, so the next step or multirun job starts its own."""
    if is_wandb(logger):
        import wandb

        wandb.finish()
