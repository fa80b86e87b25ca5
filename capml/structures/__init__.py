"""Parent cells, supercells, Vegard lattices, substitutions and disorder enumeration."""

from capml.structures.system import System, SystemConfigError

__all__ = ["System", "SystemConfigError"]
