"""Data sets of structures and labels: the HDF5 store, interchange formats, splits."""

from capml.data.store import (
    append,
    count,
    iterate,
    read,
    read_attrs,
    read_label,
    read_meta,
    read_range,
    set_attrs,
    update_rows,
    validate_set,
    write,
)
from capml.data.structure_set import DataError, StructureSet, concat

__all__ = [
    "DataError", "StructureSet", "append", "concat", "count", "iterate", "read", "read_attrs",
    "read_label", "read_meta", "read_range", "set_attrs", "update_rows", "validate_set", "write",
]
