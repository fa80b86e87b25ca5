"""Radius graphs of many structures, stored collated (flat arrays + counts).

``build_edges`` runs one neighbour-list call per structure (no Python loop over
atoms) and keeps the result as flat arrays, which is what the on-disk cache holds
and what ``GraphDataset`` slices into ``torch_geometric.data.Data`` objects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch_geometric.data import Data

from capml.data import StructureSet
from capml.graphs.neighbors import radius_edges


@dataclass
class Edges:
    """Edges of N structures: ``index`` [2, E] local atom indices (source, target),
    ``distance`` [E] (A), ``n_edges`` [N] edges per structure, in structure order."""

    index: np.ndarray
    distance: np.ndarray
    n_edges: np.ndarray

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.n_edges)]).astype(np.int64)

    def subset(self, indices) -> Edges:
        idx = np.asarray(indices, dtype=np.int64)
        off = self.offsets
        rows = (np.concatenate([np.arange(off[i], off[i + 1]) for i in idx])
                if idx.size else np.zeros(0, dtype=np.int64))
        return Edges(self.index[:, rows], self.distance[rows], self.n_edges[idx].copy())


def build_edges(data: StructureSet, cutoff: float) -> Edges:
    """Radius-graph edges (cutoff in A) of every structure of ``data``."""
    off = data.offsets
    src, dst, dist, counts = [], [], [], np.zeros(len(data), dtype=np.int64)
    for k in range(len(data)):
        s = slice(off[k], off[k + 1])
        a, b, d = radius_edges(data.positions[s], data.cell[k], data.pbc[k], cutoff)
        src.append(a)
        dst.append(b)
        dist.append(d)
        counts[k] = len(d)
    if not len(data):
        return Edges(np.zeros((2, 0), np.int64), np.zeros(0), counts)
    index = np.stack([np.concatenate(src), np.concatenate(dst)])
    return Edges(index, np.concatenate(dist), counts)


class GraphDataset(torch.utils.data.Dataset):
    """Graphs of N structures from collated, already scaled float32 tensors.

    ``x`` [n_atoms_total, F] node features, ``edge_attr`` [E, 1] edge features,
    ``y`` [N] (scaled targets) or None; item k is a ``Data`` with ``idx`` = k.
    """

    def __init__(self, x, n_atoms, edges: Edges, edge_attr, y=None):
        self.x = torch.as_tensor(x, dtype=torch.float32)
        self.edge_index = torch.as_tensor(edges.index, dtype=torch.long)
        self.edge_attr = torch.as_tensor(edge_attr, dtype=torch.float32).reshape(-1, 1)
        self.y = None if y is None else torch.as_tensor(y, dtype=torch.float32)
        self.node_off = torch.as_tensor(np.concatenate([[0], np.cumsum(n_atoms)]))
        self.edge_off = torch.as_tensor(edges.offsets)
        if len(self.node_off) - 1 != len(edges.n_edges):
            raise ValueError(f"GraphDataset: {len(self.node_off) - 1} structures but "
                             f"edges for {len(edges.n_edges)}")

    def __len__(self) -> int:
        return len(self.node_off) - 1

    def __getitem__(self, k: int) -> Data:
        a, b = int(self.node_off[k]), int(self.node_off[k + 1])
        e, f = int(self.edge_off[k]), int(self.edge_off[k + 1])
        out = Data(x=self.x[a:b], edge_index=self.edge_index[:, e:f],
                   edge_attr=self.edge_attr[e:f], idx=torch.tensor([k]))
        if self.y is not None:
            out.y = self.y[k:k + 1]
        return out
