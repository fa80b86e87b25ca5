"""Models: the band-gap GNN family (``capml.models.gnn``); MACE lives with its trainer."""

from capml.models.gnn import CONVS, OUTPUT, POOLING, BandGapGNN

__all__ = ["CONVS", "OUTPUT", "POOLING", "BandGapGNN"]
