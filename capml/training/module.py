"""LightningModule of the band-gap GNN: MSE on min-max scaled gaps, metrics in eV.

Everything needed to predict from the checkpoint alone is inside it: the
network settings, the graph cutoff (A) and the fitted node/edge/target scalers
as hyperparameters, the element feature table as a buffer.
"""

from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import torch
from torchmetrics import MaxMetric, MeanAbsoluteError, MeanSquaredError, MinMetric, R2Score

from capml.models import BandGapGNN


class Diverged(RuntimeError):
    """Training produced a non-finite loss."""


class BandGapModule(pl.LightningModule):
    def __init__(self, net: dict, scalers: dict, node_features: list, cutoff: float,
                 element_table=None, lr: float = 1e-4, weight_decay: float = 0.0,
                 freeze_layers: int = 0, level: str = ""):
        """``element_table`` [119, n_features] raw node features by atomic number; kept as a
        buffer (in the checkpoint's state dict), not as a hyperparameter."""
        super().__init__()
        self.save_hyperparameters(ignore=["element_table"])
        table = (torch.full((119, len(node_features)), float("nan"), dtype=torch.float64)
                 if element_table is None
                 else torch.tensor(np.array(element_table), dtype=torch.float64))
        self.register_buffer("element_table", table)
        self.net = BandGapGNN(node_dim=len(node_features), **net)
        self.frozen = self.net.frozen_modules(int(freeze_layers))
        for mod in self.frozen:
            mod.requires_grad_(False)
        target = scalers["target"]
        self.register_buffer("y_min", torch.tensor(float(target["minimum"][0])))
        span = float(target["maximum"][0]) - float(target["minimum"][0])
        self.register_buffer("y_span", torch.tensor(span if span > 0 else 1.0))
        self.loss_fn = torch.nn.MSELoss()
        for split in ("train", "val", "test"):
            setattr(self, f"{split}_mae", MeanAbsoluteError())
            setattr(self, f"{split}_rmse", MeanSquaredError(squared=False))
            setattr(self, f"{split}_r2", R2Score())
            setattr(self, f"{split}_max", MaxMetric())
        self.val_mae_best = MinMetric()

    # -------------------------------------------------------------- forward
    def forward(self, batch) -> torch.Tensor:
        """Scaled prediction per graph."""
        return self.net(batch.x, batch.edge_index, batch.edge_attr, batch.batch)

    def to_ev(self, scaled: torch.Tensor) -> torch.Tensor:
        return scaled * self.y_span + self.y_min

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_statistics()
        return self

    def on_train_epoch_start(self) -> None:
        self._freeze_statistics()  # Lightning does not call train() itself

    def _freeze_statistics(self) -> None:
        for mod in self.frozen:  # frozen BatchNorm layers keep their running statistics
            mod.eval()

    # ---------------------------------------------------------------- steps
    def _step(self, batch, split: str) -> torch.Tensor:
        pred = self(batch)
        loss = self.loss_fn(pred, batch.y)
        if split == "train" and not torch.isfinite(loss):
            raise Diverged(f"non-finite training loss ({loss.item()}) at epoch "
                           f"{self.current_epoch}")
        p, y = self.to_ev(pred.detach()), self.to_ev(batch.y)
        n = batch.num_graphs
        getattr(self, f"{split}_mae")(p, y)
        getattr(self, f"{split}_rmse")(p, y)
        getattr(self, f"{split}_max")((p - y).abs())
        self.log(f"{split}/loss", loss, on_step=False, on_epoch=True, batch_size=n)
        for name in ("mae", "rmse", "max"):
            self.log(f"{split}/{name}", getattr(self, f"{split}_{name}"), on_step=False,
                     on_epoch=True, batch_size=n)
        if split != "train":  # R^2 needs the whole split in one epoch (not per batch)
            getattr(self, f"{split}_r2").update(p, y)
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def _log_r2(self, split: str) -> None:
        metric = getattr(self, f"{split}_r2")
        if metric.total > 1:
            self.log(f"{split}/r2", metric.compute())
        metric.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_r2("val")
        self.val_mae_best(self.val_mae.compute())
        self.log("val/mae_best", self.val_mae_best.compute(), prog_bar=True)

    def on_test_epoch_end(self) -> None:
        self._log_r2("test")

    def on_train_start(self) -> None:
        self.val_mae_best.reset()  # drop the sanity-check value

    def predict_step(self, batch, batch_idx):
        return self.to_ev(self(batch))

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.Adam(params, lr=float(self.hparams.lr),
                                weight_decay=float(self.hparams.weight_decay))
