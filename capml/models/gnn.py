"""The band-gap GNN family of the paper, with selectable convolution and depth.

Per layer: convolution -> BatchNorm -> ReLU; then global pooling, dropout,
Linear(hidden, head_hidden) + ReLU, Linear(head_hidden, 1) and an output
activation on the min-max scaled gap (sigmoid keeps it in [0, 1], ReLU >= 0).
The paper's six architectures differ in depth (2-4), pooling (max/mean) and
output (sigmoid/ReLU); all use GraphConv (sum aggregation) with the scaled
distance as edge weight. CGConv and GATv2 use the distance as an edge feature.
"""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.nn import (
    CGConv,
    GATv2Conv,
    GraphConv,
    global_add_pool,
    global_max_pool,
    global_mean_pool,
)

POOLING = {"max": global_max_pool, "mean": global_mean_pool, "add": global_add_pool}
OUTPUT = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "identity": nn.Identity}
CONVS = ("graph", "cg", "gatv2")


class BandGapGNN(nn.Module):
    """Graph -> scaled band gap [n_graphs]."""

    def __init__(self, node_dim: int, hidden: int = 64, n_layers: int = 2, conv: str = "graph",
                 pooling: str = "max", output: str = "sigmoid", dropout: float = 0.4,
                 head_hidden: int = 16, edge_dim: int = 1):
        super().__init__()
        if conv not in CONVS:
            raise ValueError(f"model conv={conv!r}: expected one of {CONVS}")
        if pooling not in POOLING:
            raise ValueError(f"model pooling={pooling!r}: expected one of {sorted(POOLING)}")
        if output not in OUTPUT:
            raise ValueError(f"model output={output!r}: expected one of {sorted(OUTPUT)}")
        if n_layers < 1 or hidden < 1:
            raise ValueError(f"model n_layers={n_layers}, hidden={hidden}: expected >= 1")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"model dropout={dropout}: expected 0 <= dropout < 1")
        self.conv_type = conv
        # CGConv keeps the width of its input: embed the node features first.
        self.embed = nn.Linear(node_dim, hidden) if conv == "cg" else None
        width = hidden if conv == "cg" else node_dim
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        for _ in range(n_layers):
            if conv == "graph":
                self.convs.append(GraphConv(width, hidden, aggr="add"))
            elif conv == "cg":
                self.convs.append(CGConv(hidden, dim=edge_dim, aggr="add"))
            else:
                self.convs.append(GATv2Conv(width, hidden, edge_dim=edge_dim, heads=1))
            self.norms.append(nn.BatchNorm1d(hidden))
            width = hidden
        self.pool = POOLING[pooling]
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Sequential(nn.Linear(hidden, head_hidden), nn.ReLU(),
                                  nn.Linear(head_hidden, 1), OUTPUT[output]())

    def forward(self, x, edge_index, edge_attr, batch) -> torch.Tensor:
        h = self.embed(x) if self.embed is not None else x
        for conv, norm in zip(self.convs, self.norms):
            if self.conv_type == "graph":
                h = conv(h, edge_index, edge_weight=edge_attr.view(-1))
            else:
                h = conv(h, edge_index, edge_attr)
            h = torch.relu(norm(h))
        h = self.dropout(self.pool(h, batch))
        return self.head(h).view(-1)

    def frozen_modules(self, n_layers: int) -> list[nn.Module]:
        """The input embedding (if any) and the first ``n_layers`` conv + norm layers."""
        if not 0 <= n_layers <= len(self.convs):
            raise ValueError(f"freeze_layers={n_layers}: the model has {len(self.convs)} "
                             "conv layers")
        mods = [self.embed] if (self.embed is not None and n_layers) else []
        for k in range(n_layers):
            mods += [self.convs[k], self.norms[k]]
        return mods
