"""Band-gap GNN inference: batched prediction (capml.predict_band_gap) vs one graph per call.

    python bench/gnn_inference.py [--checkpoint best.ckpt] [--cells 1000] [--batch-size 256]
                                  [--threads 1]

Without --checkpoint an untrained model5 checkpoint (hidden 64, scalers fitted on the
bench cells) is written to a temporary directory: throughput does not depend on the
weights. Times the whole path (graphs + model) and the model alone, in graphs/s.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from graphs import cells
from torch_geometric.loader import DataLoader

from capml.data import StructureSet
from capml.graphs import NODE_FEATURES, MinMaxScaler, build_edges, element_table, node_features
from capml.predict import load_predictor
from capml.training.module import BandGapModule


def untrained_checkpoint(data: StructureSet, folder: Path, cutoff: float = 5.5) -> Path:
    table = element_table()
    edges = build_edges(data, cutoff)
    scalers = {"node": MinMaxScaler.fit(node_features(data.numbers, table)).to_dict(),
               "edge": MinMaxScaler.fit(edges.distance[:, None]).to_dict(),
               "target": {"minimum": [2.5], "maximum": [3.8]}}
    module = BandGapModule(net={"hidden": 64, "n_layers": 2, "conv": "graph", "pooling": "max",
                                "output": "sigmoid", "dropout": 0.4},
                           scalers=scalers, node_features=list(NODE_FEATURES), cutoff=cutoff,
                           element_table=table)
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, max_epochs=0)
    trainer.strategy.connect(module)
    path = folder / "untrained.ckpt"
    trainer.save_checkpoint(path, weights_only=False)
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint")
    ap.add_argument("--cells", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (train.py's torch_threads default is 1)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    atoms = cells(args.cells)
    data = StructureSet.from_atoms(atoms)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(args.checkpoint) if args.checkpoint else untrained_checkpoint(data,
                                                                                  Path(tmp))
        predictor = load_predictor(ckpt)
        predictor.predict(atoms[:8])  # warm-up
        t0 = time.perf_counter()
        batched = predictor.predict(atoms, batch_size=args.batch_size)
        t_batched = time.perf_counter() - t0
        t0 = time.perf_counter()
        single = np.array([predictor.predict([a], batch_size=1)[0] for a in atoms])
        t_single = time.perf_counter() - t0
        assert np.allclose(batched, single, atol=1e-5)
        ds = predictor.dataset(data)
        model = predictor.model
        with torch.no_grad():
            t0 = time.perf_counter()
            for b in DataLoader(ds, batch_size=args.batch_size):
                model(b)
            t_model_batched = time.perf_counter() - t0
            t0 = time.perf_counter()
            for b in DataLoader(ds, batch_size=1):
                model(b)
            t_model_single = time.perf_counter() - t0
    n = len(atoms)
    print(f"GNN inference on {n} cells of {len(atoms[0])} atoms ({torch.get_num_threads()} "
          f"torch threads)")
    print(f"  end to end, batch {args.batch_size}: {n / t_batched:9.1f} graphs/s")
    print(f"  end to end, one per call:  {n / t_single:9.1f} graphs/s   "
          f"speed-up {t_single / t_batched:.1f}x")
    print(f"  model only, batch {args.batch_size}: {n / t_model_batched:9.1f} graphs/s")
    print(f"  model only, one per call:  {n / t_model_single:9.1f} graphs/s   "
          f"speed-up {t_model_single / t_model_batched:.1f}x")


if __name__ == "__main__":
    main()
