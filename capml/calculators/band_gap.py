"""Band gaps from eigenvalues and occupations (spin- and k-point aware).

The rule (occupations as fractions of a spin channel's full occupation):
- clean: every level is within ``METAL_TOLERANCE`` (1e-2) of empty or full: the gap is
  the lowest empty minus the highest full level over all spins and k-points;
- smearing tails: some levels are partly occupied, but none holds between
  ``TAIL_LIMIT`` (0.1) and 0.9, and every k-point of a spin channel has the same number
  of more-than-half-filled bands: a semiconductor whose band edges lie within a few
  smearing widths of the Fermi level (e.g. HSE with SIGMA = 0.2 eV); the gap is taken
  between the more- and less-than-half-filled levels, and the note says so;
- otherwise a metal: gap 0 with ``metal`` set (0 is a metal's physical gap; NaN would
  read as "not computed"). Bands crossing the Fermi level change the filled-band count
  between k-points, and a level near it is about half filled, so the half-occupation
  rule this replaces turned smeared metals into false gaps (0.134 eV for a Cr9S18 cell
  with 95 partly filled levels).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

METAL_TOLERANCE = 1e-2  # fraction of full occupation; Gaussian smearing of 0.05 eV
# leaves ~1e-11 on the band edges of a 0.5 eV gap, so a clean gap is far below this
TAIL_LIMIT = 0.1  # a level holding more than this (and less than 1 - this) sits at E_F


@dataclass(frozen=True)
class BandEdges:
    """Fundamental gap and band edges. k indices refer to the k-point list given;
    ``vbm_k``/``cbm_k`` are those k-points (fractional reciprocal coordinates) when given."""

    gap_eV: float  # 0 for a metal
    direct_gap_eV: float  # smallest gap at one k-point (0 for a metal)
    metal: bool
    n_partial: int  # levels partly occupied (between tolerance and 1 - tolerance)
    tolerance: float = METAL_TOLERANCE
    tail_max: float = 0.0  # largest distance of a partly occupied level from empty or full
    vbm_eV: float = np.nan
    cbm_eV: float = np.nan
    vbm_index: tuple[int, int] = (-1, -1)  # (spin, k)
    cbm_index: tuple[int, int] = (-1, -1)
    vbm_k: tuple[float, ...] | None = None
    cbm_k: tuple[float, ...] | None = None

    @property
    def direct(self) -> bool:
        """Valence-band maximum and conduction-band minimum at the same k-point."""
        return not self.metal and self.vbm_index[1] == self.cbm_index[1]

    def describe(self) -> str:
        """One line for a label note."""
        if self.metal:
            return (f"metal: {self.n_partial} levels partly occupied (more than {self.tolerance:g} "
                    "from empty or full) at the Fermi level; gap 0")
        if self.direct:
            text = f"direct gap {self.gap_eV:.4f} eV at k={_fmt(self.vbm_k, self.vbm_index)}"
        else:
            text = (f"indirect gap {self.gap_eV:.4f} eV: VBM at k={_fmt(self.vbm_k, self.vbm_index)}"
                    f", CBM at k={_fmt(self.cbm_k, self.cbm_index)}; direct gap "
                    f"{self.direct_gap_eV:.4f} eV")
        if self.n_partial:
            text += (f"; across smearing tails: {self.n_partial} band-edge levels up to "
                     f"{self.tail_max:.3f} from empty or full (a smaller SIGMA makes them clean)")
        return text


def band_edges(eigenvalues, occupations, full_occupation: float = 1.0, kpoints=None,
               tolerance: float = METAL_TOLERANCE) -> BandEdges:
    """Band edges from ``eigenvalues`` (eV) and ``occupations``, both [spin, k, band].

    ``full_occupation``: a full level's occupation (1 per spin channel, 2 for
    spin-summed occupations of a spin-restricted run). ``kpoints`` [k, 3] names the
    k-points of the edges. Raises ValueError when no level, or every level, is
    occupied: no gap is defined (the run needs empty bands).
    """
    e = np.asarray(eigenvalues, dtype=float)
    f = np.asarray(occupations, dtype=float) / full_occupation
    if e.ndim != 3 or e.shape != f.shape or e.size == 0:
        raise ValueError(f"eigenvalues {np.shape(eigenvalues)} and occupations "
                         f"{np.shape(occupations)} must have the same [spin, k, band] shape")
    occupied = f > 0.5
    if occupied.all() or not occupied.any():
        raise ValueError(f"cannot define a gap: {'every' if occupied.all() else 'no'} level "
                         "is occupied (add empty bands, NBANDS, or check the occupations)")
    partial = (f > tolerance) & (f < 1 - tolerance)
    n_partial = int(partial.sum())
    at_fermi = ((f >= TAIL_LIMIT) & (f <= 1 - TAIL_LIMIT)).any()
    counts_vary = any(len(np.unique(c)) > 1 for c in occupied.sum(axis=2))
    e_occ, e_emp = np.where(occupied, e, -np.inf), np.where(occupied, np.inf, e)
    vbm, cbm = np.unravel_index(e_occ.argmax(), e.shape), np.unravel_index(e_emp.argmin(), e.shape)
    if (n_partial and (at_fermi or counts_vary)) or e_occ[vbm] >= e_emp[cbm]:
        return BandEdges(0.0, 0.0, True, n_partial, tolerance)
    direct = (e_emp.min(axis=(0, 2)) - e_occ.max(axis=(0, 2))).min()  # per k, over spins
    k = None if kpoints is None else np.asarray(kpoints, dtype=float)
    tail = float(np.minimum(f, 1 - f)[partial].max()) if n_partial else 0.0
    return BandEdges(
        gap_eV=float(e_emp[cbm] - e_occ[vbm]), direct_gap_eV=float(direct), metal=False,
        n_partial=n_partial, tolerance=tolerance, tail_max=tail,
        vbm_eV=float(e_occ[vbm]), cbm_eV=float(e_emp[cbm]),
        vbm_index=(int(vbm[0]), int(vbm[1])), cbm_index=(int(cbm[0]), int(cbm[1])),
        vbm_k=None if k is None else tuple(float(v) for v in k[vbm[1]]),
        cbm_k=None if k is None else tuple(float(v) for v in k[cbm[1]]))


def _fmt(k, index) -> str:
    where = f"#{index[1]}" if k is None else "(" + ", ".join(f"{v:.4f}" for v in k) + ")"
    return f"{where} spin {index[0]}"


def gap_from_eigenvalues(eigenvalues, occupations, occupied_fraction: float = 0.5) -> float:
    """Fundamental gap (eV if eigenvalues are eV): lowest unoccupied minus highest
    occupied level over all spins and k-points, 0 for a metal.

    ``eigenvalues`` and ``occupations`` have the same shape, e.g. [spin, k, band];
    occupations may be per spin channel (max 1) or spin-summed (max 2): a level is
    occupied when its occupation exceeds ``occupied_fraction`` of the largest one.
    Smeared metals get a false gap from this rule; ``band_edges`` does not.
    """
    e = np.asarray(eigenvalues, dtype=float).ravel()
    f = np.asarray(occupations, dtype=float).ravel()
    if e.shape != f.shape or e.size == 0:
        raise ValueError(f"eigenvalues {np.shape(eigenvalues)} and occupations "
                         f"{np.shape(occupations)} must have the same non-empty shape")
    occupied = f > occupied_fraction * f.max()
    if occupied.all() or not occupied.any():
        raise ValueError("cannot define a gap: all levels are occupied or none is "
                         "(add empty bands or check the occupations)")
    vbm, cbm = e[occupied].max(), e[~occupied].min()
    return float(max(0.0, cbm - vbm))


def gap_from_electron_count(eigenvalues, n_electrons: float, spin_degeneracy: int = 2) -> float:
    """Gap of a spin-restricted, single-k calculation from the electron count
    (robust to Fermi smearing): e[n_occ] - e[n_occ - 1] with n_occ = N / 2."""
    e = np.sort(np.asarray(eigenvalues, dtype=float).ravel())
    n_occ = round(n_electrons / spin_degeneracy)
    if not 0 < n_occ < len(e):
        raise ValueError(f"{n_occ} occupied levels out of {len(e)}: no gap defined")
    return float(max(0.0, e[n_occ] - e[n_occ - 1]))
