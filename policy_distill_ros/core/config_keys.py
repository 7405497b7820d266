"""How every config reader reads YAML and checks its keys (YAML files, spec sections,
dataclasses).

A typo or a syntax error in a config must fail loudly with one line naming the file or section
and what is wrong (the key and the keys that exist; the line and column of bad YAML); every
config reader calls these so they all say it the same way.
"""
from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["check_keys", "dataclass_keys", "read_yaml", "yaml_problem"]


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


def yaml_problem(exc: Exception) -> str:
    """A PyYAML error in one line: 'line 3, column 3: expected the node content, but found
    '-'' (PyYAML's own text spans four lines and quotes the source)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).strip().splitlines()[0]
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark else problem


def read_yaml(path: Any, what: str, error: type[Exception] = ValueError) -> Any:
    """The parsed content of a YAML file; `error` with one line naming `what` and the file when
    it cannot be read, is not text or is not valid YAML."""
    import yaml
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f)
    except OSError as exc:
        raise error(f"{what} {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise error(f"{what} {path}: not a text file") from None
    except yaml.YAMLError as exc:
        raise error(f"{what} {path}: not valid YAML ({yaml_problem(exc)})") from None
