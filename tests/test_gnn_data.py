"""The GNN test data (tests/helpers/gnn_data.py): real GFN2-xTB gaps of 40-atom cells."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.gnn_data import labeled_file


@pytest.fixture(scope="module")
def gnn_file(request, tmp_path_factory):
    return labeled_file(request.config.cache.mkdir("capml-gnn"),
                        tmp_path_factory.mktemp("gnn") / "cells.h5")


def test_labeled_gaps_are_physical(gnn_file):
    """GFN2 gaps of the test cells: all labeled, 2.5-4.5 eV, and the bromide end member
    has a wider gap than the iodide one (Br 4p lies below I 5p)."""
    from capml import data as store

    gap = store.read_label(gnn_file, "band_gap")
    x = store.read_meta(gnn_file, "x")
    assert np.isfinite(gap).all()
    assert np.all((gap > 2.5) & (gap < 4.5))
    assert gap[x == 1.0][0] > gap[x == 0.0][0] + 0.1
