"""How well an interatomic potential reproduces its reference level (the paper's Fig. 4 and 5).

Parity of energies (per atom), force components and stress components on held-out
structures, with MAE, RMSE, R^2 and the largest error; and harmonic phonon frequencies of
one structure from the potential against the reference force constants on the same
q-point path, compared frequency by frequency (ascending order at each q-point; imaginary
modes are negative, as phonopy reports them). Pure functions plus matplotlib figures.
"""

from __future__ import annotations

import numpy as np

from capml.analysis.statistics import error_metrics

# name -> (reference units, factor to the units the errors are reported in, those units)
QUANTITIES = {
    "energy": ("eV/atom", 1e3, "meV/atom"),
    "forces": ("eV/A", 1e3, "meV/A"),
    "stress": ("eV/A^3", 1e3, "meV/A^3"),
}


# ------------------------------------------------------------------- parity data
def reference_values(data) -> dict[str, np.ndarray]:
    """Labels of a StructureSet as flat parity arrays: energy per atom [N] (eV/atom),
    force components [3 sum n] (eV/A), stress components [6N] (eV/A^3, Voigt, ASE sign)."""
    for key in QUANTITIES:
        if key not in data.labels or not data.has_label(key).all():
            raise ValueError(f"reference set lacks finite '{key}' labels on some structures")
    return {"energy": data.labels["energy"] / data.n_atoms,
            "forces": data.labels["forces"].reshape(-1),
            "stress": data.labels["stress"].reshape(-1)}


def predict(calc, atoms_list) -> dict[str, np.ndarray]:
    """The same arrays as ``reference_values`` from an ASE calculator."""
    energy, forces, stress = [], [], []
    for atoms in atoms_list:
        atoms = atoms.copy()
        atoms.calc = calc
        energy.append(atoms.get_potential_energy() / len(atoms))
        forces.append(atoms.get_forces().reshape(-1))
        stress.append(atoms.get_stress(voigt=True))
    return {"energy": np.array(energy), "forces": np.concatenate(forces),
            "stress": np.concatenate(stress)}


def parity_metrics(reference: dict, predicted: dict) -> dict[str, dict[str, float]]:
    """Per quantity: MAE/RMSE/max in reported units (meV/atom, meV/A, meV/A^3), R^2, n;
    plus ``energy_relative``: the energy errors after removing their mean (the offset), which
    is what forces, MD and relative energies see. A potential of another level (a foundation
    before fine-tuning) can sit far off in ``energy`` and close in ``energy_relative``."""
    out = {}
    for key, (_, factor, units) in QUANTITIES.items():
        out[key] = _scaled(error_metrics(reference[key], predicted[key]), factor, units,
                           reference[key])
    ref_e, pred_e = np.asarray(reference["energy"]), np.asarray(predicted["energy"])
    offset = float(np.mean(pred_e - ref_e)) if ref_e.size else float("nan")
    out["energy_relative"] = _scaled(error_metrics(ref_e, pred_e - offset), 1e3, "meV/atom",
                                     ref_e) | {"offset": offset * 1e3}
    return out


def _scaled(m: dict, factor: float, units: str, reference) -> dict:
    return {"mae": m["mae"] * factor, "rmse": m["rmse"] * factor, "max": m["max"] * factor,
            "r2": m["r2"], "units": units, "n": int(np.asarray(reference).size)}


# ---------------------------------------------------------------------- phonons
def band_path(phonon, npoints: int = 51):
    """Seekpath high-symmetry path of the phonopy primitive cell: (paths, labels,
    connections), the arguments of ``Phonopy.run_band_structure``."""
    from phonopy.phonon.band_structure import get_band_qpoints_by_seekpath

    return get_band_qpoints_by_seekpath(phonon.primitive, npoints, is_const_interval=True)


def band_frequencies(phonon, path) -> dict:
    """Frequencies (THz) on ``path`` = (paths, labels, connections): 'frequencies'
    [n_q, n_branch], 'distances' [n_q] (1/A, along the path), 'ticks' [(distance, label)]."""
    paths, labels, connections = path
    phonon.run_band_structure(paths, path_connections=connections, labels=labels)
    bs = phonon.get_band_structure_dict()
    freqs = np.concatenate(bs["frequencies"])
    dists = np.concatenate(bs["distances"])
    ends = [(float(d[0]), float(d[-1])) for d in bs["distances"]]
    ticks, k = [], 0
    for seg, (d0, d1) in enumerate(ends):
        if seg == 0 or not connections[seg - 1]:  # a break starts a new label (X|M)
            if ticks and abs(ticks[-1][0] - d0) < 1e-9:
                ticks[-1] = (d0, f"{ticks[-1][1]}|{labels[k]}")
            else:
                ticks.append((d0, labels[k]))
            k += 1
        ticks.append((d1, labels[k]))
        k += 1
    return {"frequencies": freqs, "distances": dists, "ticks": ticks,
            "segments": [len(d) for d in bs["distances"]]}


def frequency_metrics(reference, predicted) -> dict[str, float]:
    """Frequency-by-frequency errors (THz): MAE, RMSE, max, R^2, and the number of
    imaginary (< -0.1 THz) frequencies in each set, acoustic Gamma modes included."""
    ref, pred = np.asarray(reference, float), np.asarray(predicted, float)
    m = error_metrics(ref, pred)
    m.update(n=int(ref.size), n_imaginary_reference=int(np.sum(ref < -0.1)),
             n_imaginary_predicted=int(np.sum(pred < -0.1)))
    return m


# ---------------------------------------------------------------------- figures
def parity_figure(reference: dict, predictions: dict[str, dict], metrics: dict[str, dict]):
    """Fig. 4: one row per model, columns energy per atom, force and stress components."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(predictions)
    fig, axes = plt.subplots(len(names), 3, figsize=(11, 3.5 * len(names)), squeeze=False)
    for row, name in enumerate(names):
        for col, (key, (units, _, err_units)) in enumerate(QUANTITIES.items()):
            ax = axes[row, col]
            ref, pred = reference[key], predictions[name][key]
            lo, hi = min(ref.min(), pred.min()), max(ref.max(), pred.max())
            pad = 0.05 * (hi - lo or 1.0)
            ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k--", lw=0.8)
            ax.scatter(ref, pred, s=6 if key == "energy" else 2, alpha=0.6)
            m = metrics[name][key]
            ax.text(0.04, 0.96, f"MAE {m['mae']:.3g} {err_units}" + _r2_text(m["r2"]),
                    transform=ax.transAxes, va="top", fontsize=9)
            ax.set_xlabel(f"reference {key} ({units})")
            ax.set_ylabel(f"{name} {key} ({units})")
    fig.tight_layout()
    return fig


def phonon_figure(title: str, reference: dict, predictions: dict[str, dict],
                  metrics: dict[str, dict]):
    """Fig. 5: dispersions of the reference and each model on one path, and one
    frequency parity panel per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(predictions)
    fig, axes = plt.subplots(1, 1 + len(names), figsize=(5 + 3.6 * len(names), 4),
                             gridspec_kw={"width_ratios": [1.6] + [1] * len(names)})
    ax = axes[0]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    _dispersion(ax, reference, "k", "-", "reference")
    for k, name in enumerate(names):
        _dispersion(ax, predictions[name], colors[k % len(colors)], "--", name)
    ax.axhline(0, color="0.6", lw=0.5)
    ax.set_ylabel("frequency (THz)")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper right")
    ref = reference["frequencies"].reshape(-1)
    for k, name in enumerate(names):
        ax = axes[1 + k]
        pred = predictions[name]["frequencies"].reshape(-1)
        lo, hi = min(ref.min(), pred.min()) - 0.2, max(ref.max(), pred.max()) + 0.2
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.scatter(ref, pred, s=4, alpha=0.5, color=colors[k % len(colors)])
        m = metrics[name]
        ax.text(0.04, 0.96, f"MAE {m['mae']:.3f} THz" + _r2_text(m["r2"]),
                transform=ax.transAxes, va="top", fontsize=9)
        ax.set_xlabel("reference frequency (THz)")
        ax.set_ylabel(f"{name} frequency (THz)")
    fig.tight_layout()
    return fig


def _dispersion(ax, band: dict, color, style, label) -> None:
    start = 0
    for n in band["segments"]:
        d = band["distances"][start:start + n]
        f = band["frequencies"][start:start + n]
        lines = ax.plot(d, f, color=color, ls=style, lw=1.0)
        if start == 0:
            lines[0].set_label(label)
        start += n
    pos = [t for t, _ in band["ticks"]]
    ax.set_xticks(pos)
    ax.set_xticklabels([lab for _, lab in band["ticks"]])
    for p in pos:
        ax.axvline(p, color="0.8", lw=0.5)
    ax.set_xlim(pos[0], pos[-1])


def _r2_text(r2) -> str:
    return f"\nR$^2$ {r2:.4f}" if np.isfinite(r2) else ""
