"""capml: temperature-dependent band gaps of anharmonic solid solutions at ML cost."""

__version__ = "0.1.0"
