"""Energies and forces of many structures at once: the batched-replica engine's force side.

An evaluator is built for a fixed list of structures (atomic numbers and cells do
not change; positions do) and maps concatenated positions [sum n, 3] (A) to
energies [R] (eV), forces [sum n, 3] (eV/A) and optionally stresses [R, 6]
(eV/A^3, Voigt, ASE sign).

- ``MaceEvaluator``: every structure in one MACE model call (a batched graph),
  neighbour lists from vesin; this is what makes many replicas cheap on a GPU.
- ``AseEvaluator``: any ASE calculator, one calculation per structure (one
  calculator instance per structure, so SCF-based calculators keep their state).

With a committee of K MACE models the energies, forces and stresses are member
means and, after every call, ``evaluator.spread`` holds the committee spread
(``Spread``: energy std [R] eV, per-atom force std [sum n] eV/A); it is None for a
single model or a calculator without a committee.

``make_evaluator`` picks the MACE path when the configured calculator is mace's
``MACECalculator`` and the ASE path otherwise; ``evaluator_factory`` binds a
Labeler (the ``calculator`` config) and the ``engine`` config block
(``EngineSettings``) into the ``cells -> Evaluator`` callable that phonons, force
constants and MD take.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.stress import full_3x3_to_voigt_6_stress

log = logging.getLogger(__name__)

ENGINES = ("auto", "batched", "serial")
DTYPES = ("float64", "float32")


@dataclass(frozen=True)
class EngineSettings:
    """The ``engine`` config block: how forces of many structures are evaluated
    (see ``make_evaluator``); ``batch_size`` structures per model call (None: all)."""

    engine: str = "auto"
    dtype: str = "float64"
    batch_size: int | None = None

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise ValueError(f"engine = {self.engine!r}: expected one of {ENGINES}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype = {self.dtype!r}: expected one of {DTYPES}")
        if self.batch_size is not None and int(self.batch_size) < 1:
            raise ValueError(f"batch_size = {self.batch_size}: expected >= 1 or null")

    @classmethod
    def from_config(cls, cfg) -> EngineSettings:
        """The settings from a config node holding the block's keys (extra keys ignored)."""
        size = cfg.get("batch_size")
        return cls(engine=str(cfg.get("engine", "auto")), dtype=str(cfg.get("dtype", "float64")),
                   batch_size=None if size is None else int(size))


@dataclass(frozen=True)
class Spread:
    """Committee spread: ``energy`` [R] eV (std over members), ``forces`` [sum n] eV/A
    (per atom: sqrt of the member mean of |F_k - <F>|^2)."""

    energy: np.ndarray
    forces: np.ndarray

    def max_force(self, offsets: np.ndarray) -> np.ndarray:
        """Largest per-atom force spread (eV/A) of each structure cut by ``offsets``."""
        return np.maximum.reduceat(self.forces, offsets[:-1])


def committee_spread(energies: np.ndarray, forces: np.ndarray) -> Spread:
    """Spread of member energies [K, R] (eV) and forces [K, n, 3] (eV/A)."""
    deviation = forces - forces.mean(axis=0)
    return Spread(energy=np.std(energies, axis=0),
                  forces=np.sqrt(np.mean(np.sum(deviation**2, axis=-1), axis=0)))


class Evaluator(abc.ABC):
    """Common layout: ``offsets`` cut the concatenated per-atom arrays; ``spread`` is
    the committee spread of the last call (None without a committee)."""

    def __init__(self, structures: Sequence[Atoms]):
        if not structures:
            raise ValueError("evaluator: no structures")
        self.structures = [a.copy() for a in structures]
        self.offsets = np.concatenate([[0], np.cumsum([len(a) for a in structures])])
        self.spread: Spread | None = None

    def __len__(self) -> int:
        return len(self.structures)

    @abc.abstractmethod
    def __call__(self, positions: np.ndarray, stress: bool = False):
        """Energies [n_structures], forces [sum n, 3] (and stresses) at ``positions``."""

    def evaluate(self, structures: Sequence[Atoms], stress: bool = False):
        """Convenience: evaluate structures with the numbers/cells of this evaluator."""
        return self(np.concatenate([a.positions for a in structures]), stress=stress)


class AseEvaluator(Evaluator):
    """One ASE calculation per structure; ``build()`` makes a calculator."""

    def __init__(self, structures: Sequence[Atoms], build: Callable[[], Calculator],
                 first: Calculator | None = None):
        super().__init__(structures)
        for k, atoms in enumerate(self.structures):
            atoms.calc = first if (k == 0 and first is not None) else build()

    def __call__(self, positions: np.ndarray, stress: bool = False):
        energies = np.empty(len(self))
        forces = np.empty((self.offsets[-1], 3))
        stresses = np.empty((len(self), 6)) if stress else None
        spread_e, spread_f = np.empty(len(self)), np.empty(self.offsets[-1])
        for r, atoms in enumerate(self.structures):
            s = slice(self.offsets[r], self.offsets[r + 1])
            atoms.positions = positions[s]
            energies[r] = atoms.get_potential_energy()
            forces[s] = atoms.get_forces()
            if stress:
                stresses[r] = atoms.get_stress(voigt=True)
            results = atoms.calc.results
            spread_e[r] = results.get("energy_spread", np.nan)
            spread_f[s] = results.get("force_spread", np.nan)
        self.spread = None if np.isnan(spread_e).any() else Spread(spread_e, spread_f)
        return energies, forces, stresses


class MaceEvaluator(Evaluator):
    """All structures in one call of each MACE model, in ``batch_size`` structures per
    call; a committee's members share the batched graph and neighbour lists, and their
    results are averaged (as mace's calculator does) with the spread beside them."""

    def __init__(self, structures: Sequence[Atoms], models, z_table, r_max: float,
                 head: int = 0, device: str = "cpu", dtype: str = "float64",
                 batch_size: int | None = None):
        import torch
        import vesin

        from capml.utils.torch_compat import import_mace

        super().__init__(structures)
        self.torch = torch
        self.dtype = {"float64": torch.float64, "float32": torch.float32}[dtype]
        self.device = torch.device(device)
        self.models = [m.to(device=self.device, dtype=self.dtype).eval() for m in models]
        for model in self.models:
            for p in model.parameters():
                p.requires_grad_(False)
        self.r_max = float(r_max)
        self.head = int(head)
        self.batch_size = int(batch_size or len(self))
        if any(not a.pbc.all() for a in self.structures):
            raise ValueError("MaceEvaluator: structures must be periodic in all directions")
        numbers = np.concatenate([a.numbers for a in self.structures])
        known = set(int(z) for z in z_table.zs)
        missing = sorted(set(int(z) for z in numbers) - known)
        if missing:
            raise ValueError(f"MACE model knows elements {sorted(known)}, structures hold "
                             f"atomic numbers {missing} it was not trained on")
        index = import_mace("mace.tools").atomic_numbers_to_indices(numbers, z_table=z_table)
        self.node_attrs = torch.nn.functional.one_hot(
            torch.as_tensor(index, dtype=torch.long), num_classes=len(z_table.zs)
        ).to(device=self.device, dtype=self.dtype)
        self.cells = np.array([a.cell.array for a in self.structures])
        self.neighbours = vesin.NeighborList(cutoff=self.r_max, full_list=True)

    def __call__(self, positions: np.ndarray, stress: bool = False):
        k = len(self.models)
        energies = np.zeros((k, len(self)))
        forces = np.zeros((k, self.offsets[-1], 3))
        stresses = np.zeros((k, len(self), 6)) if stress else None
        for start in range(0, len(self), self.batch_size):
            stop = min(start + self.batch_size, len(self))
            data = self._batch(positions, start, stop)
            a, b = self.offsets[start], self.offsets[stop]
            for m, model in enumerate(self.models):
                batch = {key: (v.clone() if key == "positions" else v)
                         for key, v in data.items()}
                out = model(batch, training=False, compute_force=True, compute_stress=stress)
                energies[m, start:stop] = out["energy"].detach().cpu().numpy()
                forces[m, a:b] = out["forces"].detach().cpu().numpy()
                if stress:
                    s3 = out["stress"].detach().cpu().numpy()
                    stresses[m, start:stop] = [full_3x3_to_voigt_6_stress(t) for t in s3]
        self.spread = committee_spread(energies, forces) if k > 1 else None
        return (energies.mean(axis=0), forces.mean(axis=0),
                stresses.mean(axis=0) if stress else None)

    def _batch(self, positions: np.ndarray, start: int, stop: int) -> dict:
        torch = self.torch
        senders, receivers, unit_shifts, shifts = [], [], [], []
        for r in range(start, stop):
            s = slice(self.offsets[r], self.offsets[r + 1])
            i, j, S = self.neighbours.compute(points=positions[s], box=self.cells[r],
                                              periodic=True, quantities="ijS")
            base = self.offsets[r] - self.offsets[start]
            senders.append(i.astype(np.int64) + base)
            receivers.append(j.astype(np.int64) + base)
            unit_shifts.append(S.astype(np.float64))
            shifts.append(S @ self.cells[r])
        a, b = self.offsets[start], self.offsets[stop]
        counts = np.diff(self.offsets[start:stop + 1])
        as_float = dict(device=self.device, dtype=self.dtype)
        return {
            "positions": torch.as_tensor(positions[a:b], **as_float),
            "node_attrs": self.node_attrs[a:b],
            "edge_index": torch.as_tensor(np.stack([np.concatenate(senders),
                                                    np.concatenate(receivers)]),
                                          dtype=torch.long, device=self.device),
            "shifts": torch.as_tensor(np.concatenate(shifts), **as_float),
            "unit_shifts": torch.as_tensor(np.concatenate(unit_shifts), **as_float),
            "cell": torch.as_tensor(self.cells[start:stop], **as_float),
            "batch": torch.repeat_interleave(torch.arange(stop - start, device=self.device),
                                             torch.as_tensor(counts, device=self.device)),
            "ptr": torch.as_tensor(self.offsets[start:stop + 1] - a, dtype=torch.long,
                                   device=self.device),
            "head": torch.full((stop - start,), self.head, dtype=torch.long,
                               device=self.device),
            "pbc": torch.ones((stop - start, 3), dtype=torch.bool, device=self.device),
        }


def is_mace(calculator) -> bool:
    """A mace ``MACECalculator`` (or a subclass, e.g. capml's committee calculator)."""
    return (any(c.__name__ == "MACECalculator" for c in type(calculator).__mro__)
            and hasattr(calculator, "models"))


def make_evaluator(structures: Sequence[Atoms], build: Callable[[], Calculator], *,
                   engine: str = "auto", dtype: str = "float64",
                   batch_size: int | None = None) -> Evaluator:
    """Evaluator for ``structures`` with calculators from ``build()``.

    ``engine``: "batched" requires a MACE calculator and evaluates all structures in
    one model call; "serial" calls the ASE calculator per structure; "auto" is
    batched for MACE and serial otherwise. ``dtype`` applies to the batched path
    (the serial path uses the calculator as configured).
    """
    if engine not in ENGINES:
        raise ValueError(f"engine = {engine!r}: expected one of {ENGINES}")
    first = build()
    if engine == "batched" and not is_mace(first):
        raise ValueError(f"engine = 'batched' needs a MACE calculator (calculator=mlip); the "
                         f"configured calculator is {type(first).__name__}: use engine=serial")
    if is_mace(first) and engine != "serial":
        heads = list(getattr(first, "available_heads", ["Default"]))
        head = heads.index(first.head) if getattr(first, "head", None) in heads else 0
        return MaceEvaluator(structures, first.models, first.z_table, first.r_max, head=head,
                             device=str(first.device), dtype=dtype, batch_size=batch_size)
    return AseEvaluator(structures, build, first=first)


def evaluator_factory(labeler, settings: EngineSettings = EngineSettings()
                      ) -> Callable[[Sequence[Atoms]], Evaluator]:
    """``cells -> Evaluator`` with the labeler's calculator (its default settings)."""
    return partial(make_evaluator, build=labeler.calculator,
                   engine=settings.engine, dtype=settings.dtype, batch_size=settings.batch_size)
