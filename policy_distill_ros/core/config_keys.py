"""The one check for unknown keys in a config mapping (YAML files, spec sections, dataclasses).

A typo in a config must fail loudly with one line naming the file or section, the key and the
keys that exist; every config reader calls this so they all say it the same way.
"""
from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["check_keys", "dataclass_keys"]


def check_keys(data: Any, allowed: Iterable[str], where: str,
               error: type[Exception] = ValueError) -> None:
    """Raise `error` unless `data` is a mapping whose keys are all in `allowed`.

    The line: "<where>: unknown keys ['scael'] (did you mean 'scale'? known: clip, scale)".
    """
    if not isinstance(data, Mapping):
        raise error(f"{where} must be a mapping, got {type(data).__name__}")
    allowed = sorted(set(allowed))
    unknown = sorted(str(k) for k in data if k not in allowed)
    if not unknown:
        return
    hints = [f"'{k}' -> '{m[0]}'" if len(unknown) > 1 else f"'{m[0]}'"
             for k in unknown for m in [difflib.get_close_matches(k, allowed, n=1)] if m]
    hint = f"did you mean {', '.join(hints)}? " if hints else ""
    raise error(f"{where}: unknown keys {unknown} ({hint}known: {', '.join(allowed)})")


def dataclass_keys(cls: type) -> list:
    """The field names of a dataclass: the keys its `from_dict` accepts."""
    return [f.name for f in dataclasses.fields(cls)]
