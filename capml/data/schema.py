"""The HDF5 data-set schema: names, shapes, dtypes and units of every array.

One file holds N structures in a ragged layout: per-atom arrays are concatenated
over structures and cut by ``n_atoms``. Labels that were not computed are NaN,
never zero. See DESIGN.md.
"""

from __future__ import annotations

import numpy as np

SCHEMA_VERSION = 1

UNITS = {
    "positions": "Angstrom",
    "cell": "Angstrom",
    "energy": "eV",
    "forces": "eV/Angstrom",
    "stress": "eV/Angstrom^3 (Voigt xx yy zz yz xz xy, ASE sign: positive = tensile)",
    "band_gap": "eV",
    "velocities": "Angstrom/fs",
    "temperature": "K",
    "amplitude": "Angstrom",
    "time": "fs",
    "label_seconds": "s",
}

# Structure arrays: name -> (per "atom" or "structure", trailing shape, dtype)
STRUCTURE_ARRAYS = {
    "numbers": ("atom", (), np.int16),
    "positions": ("atom", (3,), np.float64),
    "cell": ("structure", (3, 3), np.float64),
    "pbc": ("structure", (3,), np.bool_),
}

# Label arrays (optional, NaN where missing).
LABEL_ARRAYS = {
    "energy": ("structure", (), np.float64),
    "forces": ("atom", (3,), np.float64),
    "stress": ("structure", (6,), np.float64),
    "band_gap": ("structure", (), np.float64),
    # MD trajectories add these.
    "velocities": ("atom", (3,), np.float64),
}

# Per-structure metadata columns with their fill value for "unknown".
META_COLUMNS = {
    "id": (str, ""),  # unique structure id; matches VASP folders and label jobs
    "x": (np.float64, np.nan),  # substituted-site fraction actually realised
    "temperature": (np.float64, np.nan),  # K (phonon sampling or MD)
    "amplitude": (np.float64, np.nan),  # A (uniform displacements)
    "method": (str, ""),  # phonon | uniform | equilibrium | md | relaxed | ...
    "level": (str, ""),  # level of theory of the labels, e.g. gfn2-xtb
    "seed": (np.int64, -1),
    "source": (str, ""),  # where the structure came from (file, task)
    "label_status": (str, ""),  # "" pending | ok | failed: <reason>
    "label_note": (str, ""),  # e.g. which fallback settings converged
    "label_seconds": (np.float64, np.nan),
    "split": (str, ""),  # train | val | test | "" (unassigned)
    "round": (np.int64, -1),  # active-learning round that added the structure (-1: none)
}

STRING_DTYPE = "utf-8"  # encoding of the string columns in HDF5
