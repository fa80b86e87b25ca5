"""Min-max scaling of features and targets, fitted on the training split only."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MinMaxScaler:
    """Per-column affine map of [min, max] onto [0, 1]; a constant column maps to 0."""

    minimum: tuple[float, ...]
    maximum: tuple[float, ...]

    @classmethod
    def fit(cls, values) -> MinMaxScaler:
        v = np.asarray(values, dtype=float)
        v = v.reshape(len(v), -1)
        if not len(v):
            raise ValueError("MinMaxScaler.fit: no values to fit on")
        if not np.all(np.isfinite(v)):
            raise ValueError("MinMaxScaler.fit: values contain NaN/inf")
        return cls(tuple(v.min(axis=0).tolist()), tuple(v.max(axis=0).tolist()))

    @property
    def scale(self) -> np.ndarray:
        span = np.asarray(self.maximum) - np.asarray(self.minimum)
        return np.where(span > 0, span, 1.0)

    def transform(self, values) -> np.ndarray:
        v = np.asarray(values, dtype=float)
        shape = v.shape
        out = (v.reshape(len(v), -1) - np.asarray(self.minimum)) / self.scale
        return out.reshape(shape)

    def inverse(self, values) -> np.ndarray:
        v = np.asarray(values, dtype=float)
        shape = v.shape
        out = v.reshape(len(v), -1) * self.scale + np.asarray(self.minimum)
        return out.reshape(shape)

    def to_dict(self) -> dict:
        return {"minimum": list(self.minimum), "maximum": list(self.maximum)}

    @classmethod
    def from_dict(cls, d) -> MinMaxScaler:
        return cls(tuple(float(v) for v in d["minimum"]), tuple(float(v) for v in d["maximum"]))
