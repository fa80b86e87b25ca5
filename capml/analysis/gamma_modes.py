"""Band-gap changes under frozen Gamma-phonon distortions (paper Fig. 8).

Each Gamma mode nu of a relaxed cell is frozen in with its thermal amplitude:
the mass-weighted normal coordinate Q_nu = sqrt(hbar (1 + 2 n_BE) / (2 omega_nu)),
i.e. atom j moves by Q_nu e_nu(j) / sqrt(m_j), the root-mean-square amplitude of
a quantum harmonic oscillator at T. Both signs are evaluated. Modes of a
degenerate subspace are treated together: the reported change is the mean over
an orthonormal basis of the subspace and both signs, which equals
(Q^2 / 2d) tr(P H P) to second order (H the gap Hessian, P the subspace
projector) and so does not depend on which basis the eigensolver returned.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from ase import Atoms
from scipy import constants

from capml.analysis.nmd import Modes, degenerate_groups

AMU_A2 = constants.atomic_mass * 1e-20  # kg m^2 per amu A^2


def bose_einstein(frequency_thz: np.ndarray, temperature: float) -> np.ndarray:
    """Phonon occupation n(omega, T); zero at T = 0."""
    f = np.asarray(frequency_thz, dtype=float)
    if temperature <= 0:
        return np.zeros_like(f)
    x = constants.h * f * 1e12 / (constants.k * temperature)
    return 1.0 / np.expm1(x)


def thermal_amplitude(frequency_thz: np.ndarray, temperature: float) -> np.ndarray:
    """RMS normal-coordinate amplitude sqrt(hbar (1 + 2n) / (2 omega)) in sqrt(amu) A.

    Imaginary modes (negative frequencies) are taken at |omega|."""
    f = np.abs(np.asarray(frequency_thz, dtype=float))
    omega = 2 * np.pi * f * 1e12  # rad/s
    q2 = constants.hbar * (1 + 2 * bose_einstein(f, temperature)) / (2 * omega)  # kg m^2
    return np.sqrt(q2 / AMU_A2)


def displacement(modes: Modes, nu: int, amplitude: float) -> np.ndarray:
    """Cartesian displacements [n, 3] (A) of mode ``nu`` at normal-coordinate ``amplitude``."""
    return amplitude * modes.eigenvectors[nu] / np.sqrt(modes.masses)[:, None]


def species_weights(atoms: Atoms, modes: Modes) -> pd.DataFrame:
    """Share of each element in each mode's (mass-weighted) eigenvector norm [modes x elements]."""
    share = (modes.eigenvectors**2).sum(axis=-1)  # [modes, atoms]
    symbols = np.array(atoms.get_chemical_symbols())
    return pd.DataFrame({el: share[:, symbols == el].sum(axis=1)
                         for el in dict.fromkeys(symbols)})


def gap_changes(atoms: Atoms, modes: Modes, temperature: float,
                gap_fn: Callable[[list[Atoms]], np.ndarray], min_frequency: float = 0.05,
                degeneracy_thz: float = 0.01) -> pd.DataFrame:
    """Gap change of every Gamma mode (translations with |f| < ``min_frequency`` THz
    skipped) frozen in at its thermal amplitude at ``temperature`` (K).

    ``gap_fn(list of Atoms) -> gaps (eV)`` is called once with all distorted cells.
    Columns: mode, frequency (THz), group (degenerate subspace), amplitude
    (sqrt(amu) A), max_displacement (A), gap_plus, gap_minus (eV), delta_gap (eV,
    the subspace mean), relative_change, and the element shares of the mode.
    """
    if len(atoms) != modes.eigenvectors.shape[1]:
        raise ValueError(f"structure has {len(atoms)} atoms, the modes {modes.eigenvectors.shape[1]}")
    moving = np.where(np.abs(modes.frequencies) >= min_frequency)[0]
    groups = degenerate_groups(modes.frequencies[moving], degeneracy_thz)
    # one amplitude per subspace (from its mean frequency): the basis then does not matter
    amplitude = np.zeros(modes.n_modes)
    for members in groups:
        amplitude[moving[members]] = thermal_amplitude(
            np.abs(modes.frequencies[moving[members]]).mean(), temperature)
    cells = [atoms.copy()]
    for nu in moving:
        for sign in (1.0, -1.0):
            new = atoms.copy()
            new.positions = atoms.positions + displacement(modes, nu, sign * amplitude[nu])
            cells.append(new)
    gaps = np.asarray(gap_fn(cells), dtype=float)
    gap0, plus, minus = gaps[0], gaps[1::2], gaps[2::2]
    rows = pd.DataFrame({
        "mode": moving, "frequency": modes.frequencies[moving], "amplitude": amplitude[moving],
        "max_displacement": [np.linalg.norm(displacement(modes, nu, amplitude[nu]), axis=1).max()
                             for nu in moving],
        "gap_0": gap0, "gap_plus": plus, "gap_minus": minus,
        "mode_delta": 0.5 * (plus + minus) - gap0})
    rows["group"] = -1
    rows["delta_gap"] = np.nan
    for g, members in enumerate(groups):
        rows.loc[members, "group"] = g
        rows.loc[members, "delta_gap"] = rows.loc[members, "mode_delta"].mean()
    rows["relative_change"] = rows["delta_gap"] / gap0
    weights = species_weights(atoms, modes).iloc[moving].reset_index(drop=True)
    rows["dominant_species"] = weights.idxmax(axis=1)
    return pd.concat([rows, weights.add_prefix("share_")], axis=1)


def plot(tables: dict[float, pd.DataFrame], path, title: str = ""):
    """Fig. 8a,b: relative gap change per mode vs frequency at each temperature, and
    each mode's element shares."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 3.8))
    for temp, t in sorted(tables.items()):
        ax.plot(t["frequency"], 100 * t["relative_change"], "o", ms=4, label=f"{temp:g} K")
    ax.axhline(0, color="k", lw=0.5)
    ax.set(xlabel="Gamma-mode frequency (THz)", ylabel="Delta Eg / Eg (%)", title=title)
    ax.legend()
    t = next(iter(tables.values()))
    shares = t.filter(like="share_")
    bottom = np.zeros(len(t))
    for col in shares:
        bx.bar(t["frequency"], shares[col], bottom=bottom, width=0.08, label=col[6:])
        bottom += shares[col].to_numpy()
    bx.set(xlabel="Gamma-mode frequency (THz)", ylabel="eigenvector share", ylim=(0, 1))
    bx.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path
