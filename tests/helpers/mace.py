"""An untrained MACE model for tests and benchmarks of the batched force engine."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def build_mace(elements: Sequence[int], *, r_max: float = 5.0, hidden_irreps: str = "32x0e",
               num_interactions: int = 2, correlation: int = 3, max_ell: int = 2,
               avg_num_neighbors: float = 30.0, seed: int = 0):
    """A freshly initialised (untrained) ScaleShiftMACE of the given size with a
    ZBL pair repulsion, for the elements ``elements`` (atomic numbers): the model
    mace's own tests build, used by capml's tests and benchmarks. float64."""
    import torch

    from capml.utils.torch_compat import import_mace

    modules = import_mace("mace.modules")
    o3 = import_mace("e3nn.o3")
    zs = sorted(int(z) for z in elements)
    block = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(seed)
        model = modules.ScaleShiftMACE(
            r_max=r_max, num_bessel=8, num_polynomial_cutoff=5, max_ell=max_ell,
            interaction_cls=block, interaction_cls_first=block,
            num_interactions=num_interactions, num_elements=len(zs),
            hidden_irreps=o3.Irreps(hidden_irreps), MLP_irreps=o3.Irreps("16x0e"),
            gate=torch.nn.functional.silu, atomic_energies=np.zeros(len(zs)),
            avg_num_neighbors=avg_num_neighbors, atomic_numbers=zs, correlation=correlation,
            radial_type="bessel", pair_repulsion=True, atomic_inter_scale=1.0,
            atomic_inter_shift=0.0)
    finally:
        torch.set_default_dtype(dtype)
    return model
