"""Displacement sampling: thermal (phonon) displacements, uniform displacements."""

from capml.sampling.displacements import (
    harmonic_phonopy,
    supercell_force_constants,
    thermal,
    uniform,
)

__all__ = ["harmonic_phonopy", "supercell_force_constants", "thermal", "uniform"]
