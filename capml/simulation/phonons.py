"""Harmonic phonons by finite displacements: force constants, band structure, DOS,
a stability verdict, and a band + DOS figure like the paper's Fig. 6b.

Force constants come from phonopy's displaced supercells, whose forces are
evaluated together by an ``Evaluator`` (one batched model call per
``batch_size`` cells for MACE, in float64). The band path is seekpath's path of
the cell's own primitive cell (through phonopy), so an ordered end member is
plotted along its parent's path (Gamma-X-M-Gamma-R-X|R-M for Pm-3m) and a
symmetric supercell along the supercell's path; triclinic cells get Gamma and
the mesh only. Frequencies are in THz, imaginary ones as negative numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from phonopy import Phonopy

from capml.simulation.phonopy_io import make_phonopy, to_ase_atoms

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stability:
    stable: bool
    min_frequency: float  # THz; lowest frequency with Gamma's acoustic modes excluded
    q_point: tuple[float, float, float]  # reduced coordinates (primitive cell) of that mode
    band: int  # band index of that mode at q_point
    n_imaginary: int  # modes below -tolerance over the sampled q-points
    n_qpoints: int  # q-points sampled
    tolerance: float  # THz
    character: dict  # element -> share of the worst mode's eigenvector norm

    def summary(self) -> str:
        if self.stable:
            return (f"stable: no frequency below -{self.tolerance:g} THz at {self.n_qpoints} "
                    f"q-points (lowest counted mode {self.min_frequency:.3f} THz)")
        main = ", ".join(f"{el} {w:.0%}" for el, w in
                         sorted(self.character.items(), key=lambda kv: -kv[1]))
        q = "(" + ", ".join(f"{c:.3f}" for c in self.q_point) + ")"
        return (f"unstable: {self.n_imaginary} imaginary modes at {self.n_qpoints} q-points; "
                f"worst {self.min_frequency:.3f} THz at q = {q}, band {self.band} ({main})")


def force_constants(atoms: Atoms, make_evaluator: Callable, *, supercell_matrix=(1, 1, 1),
                    primitive_matrix="auto", distance: float = 0.01, symprec: float = 1e-5,
                    symmetrize: bool = True) -> Phonopy:
    """Phonopy object of ``atoms`` with finite-displacement force constants.

    ``make_evaluator(cells)`` returns an Evaluator for the displaced supercells
    (all evaluated in one call, batched where the model allows). ``distance`` and
    ``symprec`` (phonopy's symmetry tolerance) in A.
    """
    phonon = make_phonopy(atoms, supercell_matrix, primitive_matrix, symprec)
    phonon.generate_displacements(distance=distance)
    cells = [to_ase_atoms(c) for c in phonon.supercells_with_displacements]
    _, forces, _ = make_evaluator(cells).evaluate(cells)
    phonon.forces = forces.reshape(len(cells), len(phonon.supercell), 3)
    phonon.produce_force_constants()
    if symmetrize:
        phonon.symmetrize_force_constants()
    log.info("force constants from %d displaced %d-atom supercells", len(cells),
             len(phonon.supercell))
    return phonon


def band_structure(phonon: Phonopy, npoints: int = 51) -> dict | None:
    """Frequencies along seekpath's path of the primitive cell, or None for a
    triclinic cell. Keys: distances [list per segment], frequencies [list per
    segment, [n_q, n_bands]], labels, connections, qpoints."""
    from phonopy.phonon.band_structure import get_band_qpoints_by_seekpath

    if phonon.primitive_symmetry.dataset.number <= 2:
        return None
    bands, labels, connections = get_band_qpoints_by_seekpath(phonon.primitive, npoints)
    phonon.run_band_structure(bands, path_connections=connections, labels=labels)
    bs = phonon.band_structure
    return {"distances": list(bs.distances), "frequencies": list(bs.frequencies),
            "labels": labels, "connections": connections, "qpoints": list(bs.qpoints)}


def dos(phonon: Phonopy, mesh: float | list = 30.0, sigma: float | None = None) -> dict:
    """Total phonon DOS on a Gamma-centred mesh (``mesh``: divisions, or a length
    in A for phonopy's automatic mesh). Keys: frequencies (THz), dos (states/THz per
    primitive cell), mesh_frequencies [n_q, n_bands], mesh_qpoints."""
    phonon.run_mesh(mesh, is_gamma_center=True, with_eigenvectors=False)
    phonon.run_total_dos(sigma=sigma)
    return {"frequencies": np.array(phonon.total_dos.frequency_points),
            "dos": np.array(phonon.total_dos.dos),
            "mesh_frequencies": np.array(phonon.mesh.frequencies),
            "mesh_qpoints": np.array(phonon.mesh.qpoints)}


def frequencies_at(phonon: Phonopy, qpoints) -> np.ndarray:
    phonon.run_qpoints(np.asarray(qpoints, dtype=float))
    return np.array(phonon.qpoints.frequencies)


def stability(phonon: Phonopy, qpoints, frequencies: np.ndarray,
              tolerance: float = 0.1) -> Stability:
    """Verdict over the sampled ``qpoints`` [n_q, 3] with ``frequencies`` [n_q, n_bands]
    (THz): unstable when any mode is below -``tolerance``, where the three modes
    closest to zero at Gamma (the acoustic translations) do not count."""
    qpoints = np.asarray(qpoints, dtype=float)
    freqs = np.array(frequencies, dtype=float)
    is_gamma = np.all(np.abs(qpoints - np.round(qpoints)) < 1e-8, axis=1)
    for iq in np.flatnonzero(is_gamma):
        acoustic = np.argsort(np.abs(freqs[iq]))[:3]
        freqs[iq, acoustic] = np.inf
    iq, band = np.unravel_index(np.argmin(freqs), freqs.shape)
    worst = float(freqs[iq, band])
    n_imag = int(np.sum(freqs < -tolerance))
    return Stability(stable=n_imag == 0, min_frequency=worst,
                     q_point=tuple(float(c) for c in qpoints[iq]), band=int(band),
                     n_imaginary=n_imag, n_qpoints=len(qpoints), tolerance=tolerance,
                     character=mode_character(phonon, qpoints[iq], int(band)))


def mode_character(phonon: Phonopy, q, band: int) -> dict:
    """Share of each element in the norm of eigenvector ``band`` at ``q``."""
    phonon.run_qpoints([q], with_eigenvectors=True)
    vec = np.array(phonon.qpoints.eigenvectors[0][:, band]).reshape(-1, 3)
    weight = np.sum(np.abs(vec) ** 2, axis=1)
    out: dict[str, float] = {}
    for el, w in zip(phonon.primitive.symbols, weight):
        out[el] = out.get(el, 0.0) + float(w)
    total = sum(out.values())
    return {el: w / total for el, w in out.items()}


def analyse(phonon: Phonopy, *, mesh=30.0, npoints: int = 51, tolerance: float = 0.1) -> dict:
    """Band structure (if any), DOS and the stability verdict over Gamma, the mesh
    and the band path."""
    bands = band_structure(phonon, npoints)
    density = dos(phonon, mesh)
    qs = [np.zeros((1, 3)), density["mesh_qpoints"]]
    fs = [frequencies_at(phonon, [[0.0, 0.0, 0.0]]), density["mesh_frequencies"]]
    if bands is not None:
        qs += [np.asarray(q) for q in bands["qpoints"]]
        fs += [np.asarray(f) for f in bands["frequencies"]]
    verdict = stability(phonon, np.concatenate(qs), np.concatenate(fs), tolerance)
    return {"bands": bands, "dos": density, "gamma": fs[0][0], "stability": verdict}


def plot(result: dict, path, title: str = "") -> Path:
    """Band structure (left) and DOS (right), imaginary frequencies as negative."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bands, density = result["bands"], result["dos"]
    fig, (ax_b, ax_d) = plt.subplots(1, 2, figsize=(7.5, 4.2), sharey=True,
                                     gridspec_kw={"width_ratios": [3, 1], "wspace": 0.05})
    if bands is not None:
        ticks, ticklabels = [], []
        labels = iter(bands["labels"])
        for k, (d, f) in enumerate(zip(bands["distances"], bands["frequencies"])):
            ax_b.plot(d, f, color="C0", lw=1.0)
            if k == 0:
                ticks.append(d[0])
                ticklabels.append(next(labels))
            elif not bands["connections"][k - 1]:
                ticklabels[-1] = f"{ticklabels[-1]}|{next(labels)}"
            ticks.append(d[-1])
            ticklabels.append(next(labels))
        for t in ticks:
            ax_b.axvline(t, color="0.7", lw=0.5)
        ax_b.set_xticks(ticks, ticklabels)
        ax_b.set_xlim(ticks[0], ticks[-1])
    else:
        gamma = result["gamma"]
        ax_b.hlines(gamma, 0, 1, color="C0", lw=1.0)
        ax_b.set_xticks([0.5], [r"$\Gamma$"])
        ax_b.set_xlim(0, 1)
    ax_b.axhline(0.0, color="k", lw=0.6, ls="--")
    ax_b.set_ylabel("Frequency (THz)")
    ax_d.plot(density["dos"], density["frequencies"], color="C1", lw=1.0)
    ax_d.fill_betweenx(density["frequencies"], 0, density["dos"], color="C1", alpha=0.3)
    ax_d.axhline(0.0, color="k", lw=0.6, ls="--")
    ax_d.set_xlabel("DOS")
    ax_d.set_xticks([])
    verdict = result["stability"]
    fig.suptitle(f"{title}  [{'stable' if verdict.stable else 'unstable'}]" if title else
                 ("stable" if verdict.stable else "unstable"), fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return path


def stability_row(verdict: Stability) -> dict:
    """Flat dict of a verdict for tables."""
    row = asdict(verdict)
    row["q_point"] = " ".join(f"{c:.4f}" for c in verdict.q_point)
    row["character"] = " ".join(f"{k}:{v:.2f}" for k, v in verdict.character.items())
    row["verdict"] = verdict.summary()
    return row
