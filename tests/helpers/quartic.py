"""An Einstein crystal of independent quartic oscillators, V = sum over atoms and Cartesian
components of k u^2 / 2 + g u^4 / 4 (u: displacement from the atom's site), and its exact
classical frequencies: a model with real anharmonicity and a known answer for MD and
normal-mode analysis.

Units: k eV/A^2, g eV/A^4, energies eV, masses amu, frequencies THz.
"""

from __future__ import annotations

import numpy as np
from ase.calculators.calculator import Calculator, all_changes
from scipy import integrate

from capml.analysis.nmd import ASE_TO_THZ


class IndependentQuartic(Calculator):
    """Energy and forces of independent quartic oscillators about ``sites`` [n, 3] (A);
    displacements are taken to the nearest periodic image of each site."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, sites: np.ndarray, k: float, g: float, **kwargs):
        super().__init__(**kwargs)
        self.sites, self.k, self.g = np.asarray(sites, dtype=float), float(k), float(g)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        cell = self.atoms.cell.array
        u = self.atoms.positions - self.sites
        frac = u @ np.linalg.inv(cell)
        u = (frac - np.round(frac)) @ cell
        self.results["energy"] = float(np.sum(0.5 * self.k * u**2 + 0.25 * self.g * u**4))
        self.results["forces"] = -(self.k * u + self.g * u**3)


def amplitude(energy_ev, k, g):
    """Turning point a (A) of an orbit of energy E: k a^2 / 2 + g a^4 / 4 = E."""
    e = np.asarray(energy_ev, dtype=float)
    return np.sqrt((np.sqrt(k**2 + 4 * g * e) - k) / g) if g > 0 else np.sqrt(2 * e / k)


def frequency(energy_ev, k, g, mass_amu):
    """Classical frequency (THz) of the orbit of energy E: 1 / period, the period
    4 int_0^a dx / v(x) written with x = a sin(theta) so that the integrand is smooth:
    4 int_0^(pi/2) dtheta sqrt(m / (k + g a^2 (1 + sin^2 theta) / 2))."""
    a2 = np.atleast_1d(amplitude(energy_ev, k, g)) ** 2
    period = [4 * integrate.quad(
        lambda th, s=s: np.sqrt(mass_amu / (k + 0.5 * g * s * (1 + np.sin(th) ** 2))),
        0, np.pi / 2, epsabs=0, epsrel=1e-12)[0] for s in a2]
    out = 2 * np.pi * ASE_TO_THZ / np.asarray(period)  # 1/period in THz
    return out if np.ndim(energy_ev) else float(out[0])
