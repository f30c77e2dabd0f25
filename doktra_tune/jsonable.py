"""The one JSON sanitiser: a value as JSON can hold it, for tracking artifacts and checkpoint metadata."""

from __future__ import annotations

from typing import Any, Mapping


def jsonable(value: Any) -> Any:
    """`value` with string keys, lists for tuples, plain numbers for numpy / torch scalars and arrays,
    and `str(...)` for anything else JSON has no type for (paths, dtypes, ...)."""
    if isinstance(value, Mapping):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    if callable(getattr(value, "tolist", None)):  # numpy / torch scalars and arrays
        return jsonable(value.tolist())
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
