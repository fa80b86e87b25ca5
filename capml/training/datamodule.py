"""LightningDataModule over one HDF5 data set: labeled rows, splits, graphs, scalers.

Only structures with a finite band gap are used (labeling may be in progress;
the number dropped is logged). Splits follow ``capml.data.splits.resolve_split``
(the file's ``meta/split``, else seeded stratified ones, optionally grouped by
halide ordering; ``train_size`` subsamples the train split). Node, edge and target scalers are
fitted on the training split only, unless given (fine-tuning keeps the feature
scalers of its pretrained model, and optionally the target scaler).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch_geometric.loader import DataLoader

from capml import data as store
from capml.data import DataError
from capml.data.splits import SPLITS, UNUSED, SplitSettings, resolve_split
from capml.graphs import GraphDataset, MinMaxScaler, cached_edges, node_features

log = logging.getLogger(__name__)


def count_labeled(path) -> tuple[int, int]:
    """(structures with a finite band gap, all structures) of a data file, with clear errors."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such data file (set data.low_level / "
                                "data.high_level to an HDF5 data set)")
    n = store.count(path)
    try:
        gap = store.read_label(path, "band_gap")
    except DataError as err:
        raise DataError(f"{path}: has no 'band_gap' label (0 of {n} structures labeled); "
                        "label it with `python simulate.py task=label ...`") from err
    return int(np.isfinite(gap).sum()), n


def check_labeled(path, minimum: int) -> int:
    """Raise a DataError naming the file and the count unless >= ``minimum`` gaps are labeled."""
    n_ok, n = count_labeled(path)
    if n_ok < minimum:
        raise DataError(f"{path}: only {n_ok} of {n} structures have a finite band gap; "
                        f"training needs at least {minimum} (data.min_labeled). Label more "
                        "structures or point the data config at a labeled file.")
    return n_ok


@dataclass
class Scalers:
    node: MinMaxScaler
    edge: MinMaxScaler
    target: MinMaxScaler

    def to_dict(self) -> dict:
        return {"node": self.node.to_dict(), "edge": self.edge.to_dict(),
                "target": self.target.to_dict()}

    @classmethod
    def from_dict(cls, d) -> Scalers:
        return cls(*(MinMaxScaler.from_dict(d[k]) for k in ("node", "edge", "target")))


class BandGapDataModule(pl.LightningDataModule):
    """Graphs and scaled band gaps of the labeled structures of one HDF5 file."""

    def __init__(self, path, *, element_table, cutoff: float = 5.5, batch_size: int = 128,
                 split=None, num_workers: int = 0, graph_cache: bool = True,
                 min_labeled: int = 10, seed: int = 0, scalers: dict | None = None,
                 refit_target: bool = True, system=None):
        super().__init__()
        self.path = Path(path)
        self.table = np.asarray(element_table, dtype=float)
        self.cutoff = float(cutoff)
        self.batch_size = int(batch_size)
        self.split_settings = split if isinstance(split, SplitSettings) else \
            SplitSettings.from_config(split or {})
        self.num_workers = int(num_workers)
        self.graph_cache = bool(graph_cache)
        self.min_labeled = int(min_labeled)
        self.seed = int(seed)
        self.given_scalers = scalers
        self.refit_target = bool(refit_target)
        self.system = system
        self.datasets: dict[str, torch.utils.data.Subset] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        check_labeled(self.path, self.min_labeled)
        everything = store.read(self.path)
        labeled = everything.has_label("band_gap")
        n_dropped = int((~labeled).sum())
        log.info("%s: %d structures with a finite band gap, %d dropped (no gap yet or "
                 "labeling failed)", self.path, int(labeled.sum()), n_dropped)
        self.n_dropped = n_dropped
        rows = np.flatnonzero(labeled)
        data = everything.subset(rows)
        edges = cached_edges(self.path, everything, self.cutoff, self.graph_cache).subset(rows)
        labels, source = resolve_split(data, self.split_settings, self.path, self.system)
        counts = {s: int(np.sum(labels == s)) for s in SPLITS}
        for s in SPLITS:
            if counts[s] == 0:
                raise DataError(f"{self.path}: the {source} split leaves '{s}' empty "
                                f"({counts}); label more structures")
        n_unused = int(np.sum(labels == UNUSED))
        log.info("%s: %s split %s%s", self.path, source, counts,
                 f", {n_unused} train structures left out (data.split.train_size)"
                 if n_unused else "")
        self.split_source = source
        self.scalers = self._scalers(data, edges, labels == "train")
        x = self.scalers.node.transform(node_features(data.numbers, self.table))
        e = self.scalers.edge.transform(edges.distance[:, None])
        y = self.scalers.target.transform(data.labels["band_gap"][:, None])[:, 0]
        full = GraphDataset(x, data.n_atoms, edges, e, y)
        self.data, self.labels = data, labels  # labeled structures and their split
        for s in SPLITS:
            self.datasets[s] = torch.utils.data.Subset(full, np.flatnonzero(labels == s).tolist())

    def _scalers(self, data, edges, train) -> Scalers:
        off = data.offsets
        atoms = np.concatenate([np.arange(off[i], off[i + 1]) for i in np.flatnonzero(train)])
        eoff = edges.offsets
        bonds = np.concatenate([np.arange(eoff[i], eoff[i + 1]) for i in np.flatnonzero(train)])
        target = MinMaxScaler.fit(data.labels["band_gap"][train])
        if self.given_scalers is None:
            return Scalers(MinMaxScaler.fit(node_features(data.numbers[atoms], self.table)),
                           MinMaxScaler.fit(edges.distance[bonds][:, None]), target)
        given = Scalers.from_dict(self.given_scalers)
        if self.refit_target:
            return Scalers(given.node, given.edge, target)
        scaled = given.target.transform(data.labels["band_gap"][train][:, None])
        if scaled.min() < 0 or scaled.max() > 1:
            log.warning("%s: kept target scaler maps training gaps to [%.2f, %.2f], outside "
                        "[0, 1] that a sigmoid output can reach; consider target_scaler=refit",
                        self.path, scaled.min(), scaled.max())
        return Scalers(given.node, given.edge, given.target)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        gen = torch.Generator().manual_seed(self.seed)
        return DataLoader(self.datasets[split], batch_size=self.batch_size, shuffle=shuffle,
                          num_workers=self.num_workers, generator=gen)

    def train_dataloader(self):
        return self._loader("train", shuffle=True)

    def val_dataloader(self):
        return self._loader("val", shuffle=False)

    def test_dataloader(self):
        return self._loader("test", shuffle=False)

    def loader(self, split: str) -> DataLoader:
        """Unshuffled loader of one split (for predictions and plots)."""
        return self._loader(split, shuffle=False)

    def meta_of(self, split: str) -> dict[str, np.ndarray]:
        """Metadata (id, x, method, temperature) and true gaps (eV) of a split, loader order."""
        idx = np.flatnonzero(self.labels == split)
        out = {k: self.data.meta[k][idx] for k in ("id", "x", "method", "temperature")
               if k in self.data.meta}
        out["band_gap"] = self.data.labels["band_gap"][idx]
        return out
