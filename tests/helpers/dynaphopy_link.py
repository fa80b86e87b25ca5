"""DynaPhoPy (Carreras et al.) driven on an in-memory trajectory: the reference that
capml.analysis.nmd is validated and benchmarked against (tests, bench/nmd.py).

DynaPhoPy conventions (dynaphopy 1.19.0): time in ps, velocities in A/ps, frequencies in
THz; its Lorentzian ``width`` is the FWHM. Its FFT autocorrelation over pieces of
T = 1/resolution widens a Lorentzian by 1/(pi T). At Gamma it zeroes the three lowest
modes as the acoustic ones, wrong where optical modes are imaginary, so Gamma is refitted
with DynaPhoPy's own fit then and only true acoustic modes are dropped.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
from ase import Atoms

from capml.analysis import nmd
from capml.simulation.phonopy_io import full_force_constants, map_atoms, to_ase_atoms


def dynaphopy_renormalise(phonon, velocities, dt_fs, resolution: float = 0.05, f_max=None):
    """DynaPhoPy's quasiparticle analysis (FFT spectra, Lorentzian fits) of the in-memory
    ``velocities`` [t, n, 3] (A/fs, atoms in the phonopy supercell's order).

    Returns (harmonic, frequencies, linewidths), each [n_q * n_bands] THz over DynaPhoPy's
    commensurate q-points; nan for Gamma's acoustic modes and failed fits (reported as 0).
    """
    from dynaphopy import Quasiparticle
    from dynaphopy.analysis import fitting
    from dynaphopy.atoms import Structure
    from dynaphopy.dynamics import Dynamics
    from dynaphopy.interface import phonopy_link
    from dynaphopy.parameters import Parameters

    fc = full_force_constants(phonon)
    uc = phonon.unitcell
    smat = np.rint(phonon.supercell_matrix).astype(int)
    if not np.array_equal(smat, np.diag(np.diag(smat))):
        raise ValueError("DynaPhoPy needs a diagonal supercell matrix")
    structure = Structure(cell=uc.cell, scaled_positions=uc.scaled_positions,
                          atomic_elements=list(uc.symbols), masses=uc.masses,
                          primitive_matrix=phonon.primitive_matrix,
                          force_constants=phonopy_link.ForceConstants(fc, supercell=smat))
    # DynaPhoPy orders supercell atoms its own way (unit-cell atom slowest, a fastest)
    theirs = Atoms(structure.get_atomic_elements(supercell=np.diag(smat)),
                   positions=structure.get_positions(supercell=np.diag(smat)),
                   cell=phonon.supercell.cell, pbc=True)
    order = map_atoms(to_ase_atoms(phonon.supercell), theirs)
    v = np.asarray(velocities)[:, order] * 1e3  # A/fs -> A/ps
    params = Parameters()  # a process-wide singleton: set everything this analysis reads
    params.silent, params.use_symmetry, params.use_MD_cell_commensurate = True, True, False
    params.project_on_atom, params.zero_padding = -1, 0
    if f_max is None:
        f_max = 1.3 * np.abs(nmd.modes_from_phonopy(phonon).frequencies).max()
    with contextlib.redirect_stdout(io.StringIO()), np.errstate(all="ignore"):
        dynamic = Dynamics(structure=structure, velocity=v,
                           time=np.arange(len(v)) * dt_fs * 1e-3,  # ps
                           supercell=phonon.supercell.cell)
        qp = Quasiparticle(dynamic)
        qp.select_power_spectra_algorithm(2)  # FFT (numpy)
        qp.select_fitting_function(0)  # Lorentzian
        qp.set_reduced_q_vector([0.0, 0.0, 0.0])
        params.spectrum_resolution = resolution
        qp.set_frequency_limits([0.0, f_max])
        data = qp.get_commensurate_points_data(auto_range=False)
        harmonic = np.array([phonopy_link.obtain_eigenvectors_and_frequencies(
            structure, q, print_data=False)[1] for q in data["q_points"]])
        freq = np.array(data["frequencies"], dtype=float)
        width = np.array(data["linewidths"], dtype=float)
        for k, q in enumerate(data["q_points"]):
            if np.allclose(q, 0) and not np.all(np.abs(harmonic[k, :3]) < 0.05):
                qp.set_reduced_q_vector(q)  # its three lowest Gamma modes are not acoustic
                fit = fitting.phonon_fitting_analysis(
                    qp.get_power_spectrum_phonon(), qp.parameters.frequency_range,
                    harmonic_frequencies=qp.get_frequencies(), show_plots=False,
                    fitting_function_type=0, use_degeneracy=True)
                freq[k], width[k] = fit["positions"], fit["widths"]
    harmonic, freq, width = harmonic.ravel(), freq.ravel(), width.ravel()
    drop = (np.abs(harmonic) < 0.05) | ((freq == 0) & (width == 0))
    freq[drop], width[drop] = np.nan, np.nan
    return harmonic, freq, width


def on_modes(modes, harmonic, values):
    """DynaPhoPy's per-(q, band) ``values`` put on capml's modes: both harmonic spectra
    sorted and paired; degeneracy makes the order within a group immaterial."""
    ours, theirs = np.argsort(modes.frequencies), np.argsort(harmonic)
    out = np.empty(len(values))
    out[ours] = values[theirs]
    return out, np.abs(modes.frequencies[ours] - harmonic[theirs]).max()
