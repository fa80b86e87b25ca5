"""Band gaps of new structures from a trained GNN checkpoint alone.

The checkpoint holds the architecture, graph cutoff, element feature table and
the node/edge/target scalers fitted at training time, so nothing else is needed:

    from capml import predict_band_gap
    gaps_eV = predict_band_gap("outputs/.../finetune/checkpoints/best.ckpt", atoms_list)
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np


class BandGapPredictor:
    """A loaded checkpoint; ``predict`` turns structures into band gaps (eV) in batches."""

    def __init__(self, checkpoint, device: str = "cpu"):
        from capml.graphs import MinMaxScaler
        from capml.training.module import BandGapModule

        path = Path(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such GNN checkpoint")
        self.model = BandGapModule.load_from_checkpoint(path, map_location=device,
                                                        weights_only=True).eval()
        self.device = device
        hp = self.model.hparams
        self.cutoff = float(hp.cutoff)
        self.node_scaler = MinMaxScaler.from_dict(hp.scalers["node"])
        self.edge_scaler = MinMaxScaler.from_dict(hp.scalers["edge"])
        self.table = self.model.element_table.cpu().numpy()

    def dataset(self, structures):
        """GraphDataset of ``structures`` (list of ase.Atoms or a StructureSet)."""
        from capml.data import StructureSet
        from capml.graphs import GraphDataset, build_edges, node_features

        data = structures if isinstance(structures, StructureSet) else \
            StructureSet.from_atoms(list(structures), meta={})
        edges = build_edges(data, self.cutoff)
        x = self.node_scaler.transform(node_features(data.numbers, self.table))
        e = self.edge_scaler.transform(edges.distance[:, None])
        return GraphDataset(x, data.n_atoms, edges, e)

    def predict(self, structures, batch_size: int = 256) -> np.ndarray:
        """Band gaps (eV) [N] of ``structures``, ``batch_size`` graphs per model call."""
        import torch
        from torch_geometric.loader import DataLoader

        ds = self.dataset(structures)
        out = []
        with torch.no_grad():
            for batch in DataLoader(ds, batch_size=batch_size, shuffle=False):
                batch = batch.to(self.device)
                out.append(self.model.to_ev(self.model(batch)).double().cpu())
        return torch.cat(out).numpy() if out else np.zeros(0)


@lru_cache(maxsize=4)
def _cached(path: str, mtime_ns: int, device: str) -> BandGapPredictor:
    return BandGapPredictor(path, device)


def load_predictor(checkpoint, device: str = "cpu") -> BandGapPredictor:
    """BandGapPredictor, loaded once per checkpoint file version (path and mtime)."""
    path = Path(checkpoint).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such GNN checkpoint")
    return _cached(str(path), path.stat().st_mtime_ns, device)


def predict_band_gap(checkpoint, atoms_list, batch_size: int = 256,
                     device: str = "cpu") -> np.ndarray:
    """Band gaps (eV) of ``atoms_list`` (ase.Atoms list or StructureSet) from ``checkpoint``."""
    return load_predictor(checkpoint, device).predict(atoms_list, batch_size)
