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


def fit(model, structures, *, steps: int = 150, lr: float = 0.01, forces_weight: float = 10.0):
    """Train ``model`` in place on the energies and forces that ``structures`` carry (their
    calculators' results), full batch with Adam: a few seconds for a tiny model on a few
    small cells. Returns the final loss (eV^2/atom^2 + forces_weight x (eV/A)^2)."""
    import torch

    from capml.utils.torch_compat import import_mace

    data = import_mace("mace.data")
    tools = import_mace("mace.tools")
    z_table = tools.AtomicNumberTable([int(z) for z in model.atomic_numbers])
    with tools.torch_tools.default_dtype(torch.float64):
        graphs = [data.AtomicData.from_config(data.config_from_atoms(a), z_table=z_table,
                                              cutoff=float(model.r_max)) for a in structures]
    batch = import_mace("mace.tools.torch_geometric").Batch.from_data_list(graphs).to_dict()
    n_atoms = torch.tensor([len(a) for a in structures], dtype=torch.float64)
    energy = torch.tensor([a.get_potential_energy() for a in structures])
    forces = torch.tensor(np.concatenate([a.get_forces() for a in structures]))
    model.train()
    for p in model.parameters():
        p.requires_grad_(True)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        optimiser.zero_grad()
        out = model(dict(batch, positions=batch["positions"].clone()), training=True)
        loss = (torch.mean(((out["energy"] - energy) / n_atoms) ** 2)
                + forces_weight * torch.mean((out["forces"] - forces) ** 2))
        loss.backward()
        optimiser.step()
    model.eval()
    return float(loss.detach())
