"""capml: temperature-dependent band gaps of anharmonic solid solutions at ML cost."""

__version__ = "0.1.0"

from capml.predict import predict_band_gap  # noqa: F401  (torch loads on first call)
