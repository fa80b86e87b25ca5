"""The GNN family: output ranges, invariances, freezing, config errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_geometric.loader import DataLoader

from capml.data import StructureSet
from capml.graphs import GraphDataset, MinMaxScaler, build_edges, element_table, node_features
from capml.models import BandGapGNN
from capml.sampling import uniform


def _dataset(cells):
    data = StructureSet.from_atoms(cells)
    edges = build_edges(data, 5.5)
    x = node_features(data.numbers, element_table())
    node = MinMaxScaler.fit(x)
    edge = MinMaxScaler.fit(edges.distance[:, None])
    return GraphDataset(node.transform(x), data.n_atoms, edges,
                        edge.transform(edges.distance[:, None]))


def _predict(model, ds):
    model.eval()
    with torch.no_grad():
        batch = next(iter(DataLoader(ds, batch_size=len(ds))))
        return model(batch.x, batch.edge_index, batch.edge_attr, batch.batch)


@pytest.fixture(scope="module")
def cells(system):
    rng = np.random.default_rng(11)
    return [uniform(system.random_solid_solution(x, rng), 0.1, rng) for x in (0.0, 0.5, 1.0)]


@pytest.mark.parametrize("conv", ["graph", "cg", "gatv2"])
@pytest.mark.parametrize("pooling,output", [("max", "sigmoid"), ("mean", "relu")])
def test_outputs_lie_in_the_range_of_the_activation(cells, conv, pooling, output):
    torch.manual_seed(0)
    model = BandGapGNN(node_dim=4, hidden=16, n_layers=3, conv=conv, pooling=pooling,
                       output=output, dropout=0.2)
    y = _predict(model, _dataset(cells))
    assert y.shape == (3,) and torch.isfinite(y).all()
    assert (y >= 0).all()
    if output == "sigmoid":
        assert (y <= 1).all()


@pytest.mark.parametrize("conv", ["graph", "cg", "gatv2"])
def test_prediction_is_invariant_to_atom_order_translation_and_rotation(cells, conv):
    """The graph holds only species and interatomic distances: relabelling atoms,
    shifting them rigidly or rotating the whole crystal leaves the gap unchanged."""
    torch.manual_seed(0)
    model = BandGapGNN(node_dim=4, hidden=16, n_layers=2, conv=conv)
    atoms = cells[1]
    perm = np.random.default_rng(0).permutation(len(atoms))
    shifted = atoms.copy()
    shifted.positions += [0.7, -1.3, 2.1]
    rotated = atoms.copy()
    rotated.rotate(37, "z", rotate_cell=True)
    rotated.rotate(11, "x", rotate_cell=True)
    ref = _predict(model, _dataset([atoms]))
    for other in (atoms[perm], shifted, rotated):
        assert torch.allclose(_predict(model, _dataset([other])), ref, atol=1e-5)


def test_frozen_layers_do_not_change_in_training(cells):
    from capml.training.module import BandGapModule

    scalers = {k: {"minimum": [0.0] * n, "maximum": [1.0] * n}
               for k, n in (("node", 4), ("edge", 1), ("target", 1))}
    module = BandGapModule(net={"hidden": 8, "n_layers": 3, "conv": "graph"}, scalers=scalers,
                           node_features=["a", "b", "c", "d"], cutoff=5.5, freeze_layers=2,
                           lr=1e-2)
    module.train()
    assert not module.net.norms[0].training and module.net.norms[2].training
    before = {k: v.clone() for k, v in module.net.state_dict().items()}
    opt = module.configure_optimizers()
    batch = next(iter(DataLoader(_dataset(cells), batch_size=3)))
    for _ in range(3):
        loss = module(batch).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = module.net.state_dict()
    for k in before:
        frozen = k.startswith(("convs.0.", "convs.1.", "norms.0.", "norms.1."))
        changed = not torch.equal(before[k], after[k])
        if frozen:
            assert not changed, f"{k} changed although frozen"
    assert not torch.equal(before["convs.2.lin_rel.weight"], after["convs.2.lin_rel.weight"])


@pytest.mark.parametrize("kwargs,match", [
    ({"conv": "gcn"}, "conv='gcn'"), ({"pooling": "min"}, "pooling='min'"),
    ({"output": "tanh"}, "output='tanh'"), ({"dropout": 1.0}, "dropout=1.0"),
    ({"n_layers": 0}, "n_layers=0")])
def test_bad_model_settings_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BandGapGNN(node_dim=4, **kwargs)


def test_cannot_freeze_more_layers_than_exist():
    with pytest.raises(ValueError, match="freeze_layers=3: the model has 2"):
        BandGapGNN(node_dim=4, n_layers=2).frozen_modules(3)
