"""Seeds derived from the run seed and a name, so that a replica's or a trajectory's
random stream does not depend on its position in a list or on batching."""

from __future__ import annotations

import zlib

import numpy as np


def seed_of(seed: int, name: str) -> int:
    """A non-negative int64 seed from (``seed``, crc32 of ``name``)."""
    return int(np.random.SeedSequence([int(seed), zlib.crc32(name.encode())])
               .generate_state(1, dtype=np.uint64)[0] % 2**63)
