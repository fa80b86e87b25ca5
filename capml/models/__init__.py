"""Models: the GNN band-gap family and MACE interatomic potentials."""
