"""Messages to numbers, duck-typed.

rclpy messages and rosbags-deserialized messages share attribute names (`header.stamp.sec`,
`position`, `orientation.x`, `layout.dim[0].label`), so walking attributes gives identical
vectors on the robot and in the trainer without importing any message package here.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from .contract import header_stamp_s, stamp_s  # re-exported: the stamp rule lives there

__all__ = ["FieldError", "extract", "header_stamp_s", "stamp_s", "names_of", "layout_labels"]


class FieldError(ValueError):
    """A message lacks the field a spec asks for, or the field is not numeric."""


@lru_cache(maxsize=256)
def _split(field_path: str) -> tuple[str, ...]:
    parts = tuple(field_path.split("."))
    if not field_path or any(not p for p in parts):
        raise FieldError(f"bad field path {field_path!r}")
    return parts


def _to_array(value: Any, field_path: str) -> np.ndarray:
    # geometry_msgs Quaternion (x, y, z, w) before Vector3/Point (x, y, z).
    if hasattr(value, "x") and hasattr(value, "y") and hasattr(value, "z"):
        if hasattr(value, "w"):
            return np.array((value.x, value.y, value.z, value.w), dtype=np.float64)
        return np.array((value.x, value.y, value.z), dtype=np.float64)
    if isinstance(value, (bool, str, bytes)):
        raise FieldError(f"field '{field_path}' is {type(value).__name__}, not numeric")
    if isinstance(value, (int, float, np.number)):
        return np.array((value,), dtype=np.float64)
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise FieldError(f"field '{field_path}' of type {type(value).__name__} is not a "
                         f"number, vector or numeric sequence") from None
    if arr.ndim != 1:
        arr = arr.reshape(-1)
    return arr


def extract(msg: Any, field_path: str) -> np.ndarray:
    """Numbers at `field_path` ("position", "twist.twist.linear") as a 1-D float64 array.

    Vector3/Point -> [x, y, z]; Quaternion -> [x, y, z, w]; numeric sequences (lists,
    array.array, numpy) -> their values; a scalar -> one value. The result may share memory
    with the message (no copy for array-backed sequences): do not write into it.
    """
    value = msg
    for part in _split(field_path):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise FieldError(f"message {type(msg).__name__} has no field '{field_path}' "
                             f"(missing '{part}')") from None
    return _to_array(value, field_path)


def layout_labels(msg: Any) -> list[str] | None:
    """Labels of a Float64MultiArray: `layout.dim[0].label`, comma-separated."""
    layout = getattr(msg, "layout", None)
    dims = getattr(layout, "dim", None) if layout is not None else None
    if not dims:
        return None
    label = dims[0].label
    if not label:
        return None
    return [s.strip() for s in label.split(",")]


def names_of(msg: Any, term: Any = None) -> list[str] | None:
    """Element names of a message: `msg.name` (JointState) or the layout labels.

    With a term (anything with `joints`/`labels` attributes, e.g. ObsTerm) the source follows
    the term: labels -> layout labels, joints -> msg.name. Without one, whichever exists.
    """
    if term is not None and getattr(term, "labels", None) is not None:
        return layout_labels(msg)
    name = getattr(msg, "name", None)
    if name is not None and not isinstance(name, str):
        return name if isinstance(name, list) else list(name)
    if term is not None and getattr(term, "joints", None) is not None:
        return None
    return layout_labels(msg)
