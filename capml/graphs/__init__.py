"""Radius graphs of periodic structures for the band-gap GNN: neighbour lists,
node/edge features, scalers, and an on-disk edge cache next to the data file."""

from capml.graphs.build import Edges, GraphDataset, build_edges
from capml.graphs.cache import cached_edges, structure_key
from capml.graphs.elements import NODE_FEATURES, element_table, node_features
from capml.graphs.neighbors import radius_edges
from capml.graphs.scalers import MinMaxScaler

__all__ = [
    "NODE_FEATURES", "Edges", "GraphDataset", "MinMaxScaler", "build_edges", "cached_edges",
    "element_table", "node_features", "radius_edges", "structure_key",
]
