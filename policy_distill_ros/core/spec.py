"""Observation and action specs: the one description of what a policy sees and commands.

The same frozen dataclasses drive the robot's vector assembly, the simulator's in-process path
and the trainer's bag reader, so the three cannot disagree about order, scaling or history.
Validation happens in `__post_init__`; every `SpecError` names the term, field or joint at fault.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .config_keys import check_keys, yaml_problem

__all__ = ["SpecError", "ObsTerm", "ObservationSpec", "ActionSpec", "PolicySpec",
           "load_policy_spec", "dump_policy_spec", "PRIVILEGED_PREFIX", "TERM_KINDS"]

PRIVILEGED_PREFIX = "privileged/"
TERM_KINDS = ("topic", "last_action", "command")



class SpecError(ValueError):
    """A policy/observation/action spec is malformed; the message names what and where."""


# ---------------------------------------------------------------------------------------------
# small validators

def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _finite_float(v: Any, where: str) -> float:
    if not _is_number(v) or not math.isfinite(float(v)):
        raise SpecError(f"{where} must be a finite number, got {v!r}")
    return float(v)


def _scalar_or_vector(v: Any, size: int | None, where: str) -> float | tuple[float, ...]:
    """A scalar (applies to every element) or a per-element list of exactly `size` numbers."""
    if _is_number(v):
        return _finite_float(v, where)
    if isinstance(v, (list, tuple, np.ndarray)):
        values = tuple(_finite_float(x, f"{where}[{i}]") for i, x in enumerate(v))
        if size is not None and len(values) != size:
            raise SpecError(f"{where} has {len(values)} values but the size is {size}")
        return values
    raise SpecError(f"{where} must be a number or a list of numbers, got {v!r}")


def _names(v: Any, where: str) -> tuple[str, ...]:
    if isinstance(v, str) or not isinstance(v, (list, tuple)):
        raise SpecError(f"{where} must be a list of names, got {v!r}")
    out = []
    for i, n in enumerate(v):
        if not isinstance(n, str) or not n:
            raise SpecError(f"{where}[{i}] must be a non-empty string, got {n!r}")
        out.append(n)
    seen: set[str] = set()
    for n in out:
        if n in seen:
            raise SpecError(f"{where}: name '{n}' appears twice")
        seen.add(n)
    if not out:
        raise SpecError(f"{where} is empty")
    return tuple(out)


def _expand(v: float | tuple[float, ...], size: int) -> np.ndarray:
    return np.full(size, v, dtype=np.float64) if isinstance(v, float) else np.asarray(
        v, dtype=np.float64)


def _plain(v: float | tuple[float, ...]) -> float | list[float]:
    return v if isinstance(v, float) else list(v)


def _check_keys(d: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    check_keys(d, allowed, where, SpecError)


# ---------------------------------------------------------------------------------------------
# observation terms

_TERM_KEYS = ("name", "kind", "topic", "field", "joints", "labels", "size", "offset", "scale",
              "clip", "privileged")


@dataclass(frozen=True)
class ObsTerm:
    """One named block of the observation: value = clip((raw - offset) * scale).

    kind "topic" reads `field` of messages on `topic`, selected by `joints` (msg.name) or
    `labels` (Float64MultiArray layout) or taken whole (`size`). kind "last_action" is the
    policy's previous action (size = action size, filled in by PolicySpec when omitted);
    kind "command" is an externally set command vector of the given `size`.
    """

    name: str
    kind: str = "topic"
    topic: str | None = None
    field: str | None = None
    joints: tuple[str, ...] | None = None
    labels: tuple[str, ...] | None = None
    size: int | None = None
    offset: float | tuple[float, ...] = 0.0
    scale: float | tuple[float, ...] = 1.0
    clip: tuple[float, float] | None = None
    privileged: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise SpecError(f"observation term name must be a non-empty string, got {self.name!r}")
        w = f"observation term '{self.name}'"
        if self.kind not in TERM_KINDS:
            raise SpecError(f"{w}: kind {self.kind!r} is not one of {TERM_KINDS}")

        def set_(key: str, value: Any) -> None:  # normalize a field of this frozen dataclass
            object.__setattr__(self, key, value)

        if self.joints is not None:
            set_("joints", _names(self.joints, f"{w}.joints"))
        if self.labels is not None:
            set_("labels", _names(self.labels, f"{w}.labels"))
        if self.size is not None:
            if isinstance(self.size, bool) or not isinstance(self.size, (int, np.integer)) \
                    or self.size < 1:
                raise SpecError(f"{w}.size must be a positive integer, got {self.size!r}")
            set_("size", int(self.size))
        if self.kind == "topic":
            if not isinstance(self.topic, str) or not self.topic.strip("/"):
                raise SpecError(f"{w}.topic must be a topic name, got {self.topic!r}")
            if not isinstance(self.field, str) or not self.field or \
                    any(not p for p in self.field.split(".")):
                raise SpecError(f"{w}.field must be an attribute path like 'position' or "
                                f"'twist.twist.linear', got {self.field!r}")
            if self.joints is not None and self.labels is not None:
                raise SpecError(f"{w}: give either joints or labels, not both")
            selected = self.joints if self.joints is not None else self.labels
            if selected is not None:
                if self.size is not None and self.size != len(selected):
                    raise SpecError(f"{w}.size is {self.size} but it selects {len(selected)} "
                                    f"{'joints' if self.joints is not None else 'labels'}")
                set_("size", len(selected))
            elif self.size is None:
                raise SpecError(f"{w}: needs joints, labels or size")
        else:
            for key in ("topic", "field", "joints", "labels"):
                if getattr(self, key) is not None:
                    raise SpecError(f"{w}: kind {self.kind} takes no '{key}'")
            if self.kind == "command" and self.size is None:
                raise SpecError(f"{w}: kind command needs a size")
        if not isinstance(self.privileged, bool):
            raise SpecError(f"{w}.privileged must be true or false, got {self.privileged!r}")
        set_("offset", _scalar_or_vector(self.offset, self.size, f"{w}.offset"))
        set_("scale", _scalar_or_vector(self.scale, self.size, f"{w}.scale"))
        if self.clip is not None:
            if not isinstance(self.clip, (list, tuple)) or len(self.clip) != 2:
                raise SpecError(f"{w}.clip must be [low, high], got {self.clip!r}")
            lo = _finite_float(self.clip[0], f"{w}.clip[0]")
            hi = _finite_float(self.clip[1], f"{w}.clip[1]")
            if lo >= hi:
                raise SpecError(f"{w}.clip low {lo} must be below high {hi}")
            set_("clip", (lo, hi))

    @property
    def is_privileged(self) -> bool:
        """True when the term reads simulation-only information."""
        return self.privileged or (self.topic is not None
                                   and self.topic.lstrip("/").startswith(PRIVILEGED_PREFIX))

    def offset_array(self) -> np.ndarray:
        return _expand(self.offset, self._resolved_size())

    def scale_array(self) -> np.ndarray:
        return _expand(self.scale, self._resolved_size())

    def _resolved_size(self) -> int:
        if self.size is None:
            raise SpecError(f"observation term '{self.name}': size unknown (a last_action term "
                            f"gets its size from the action spec; use PolicySpec)")
        return self.size

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "observation term") -> ObsTerm:
        _check_keys(d, _TERM_KEYS, f"{where} '{d.get('name', '?')}'" if isinstance(d, Mapping)
                    else where)
        if "name" not in d:
            raise SpecError(f"{where} has no name")
        return cls(**{k: v for k, v in d.items()})

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name}
        if self.kind != "topic":
            d["kind"] = self.kind
        else:
            d["topic"] = self.topic
            d["field"] = self.field
        if self.joints is not None:
            d["joints"] = list(self.joints)
        elif self.labels is not None:
            d["labels"] = list(self.labels)
        elif self.size is not None:
            d["size"] = self.size
        d["offset"] = _plain(self.offset)
        d["scale"] = _plain(self.scale)
        if self.clip is not None:
            d["clip"] = list(self.clip)
        if self.privileged:
            d["privileged"] = True
        return d


# ---------------------------------------------------------------------------------------------
# observation spec

@dataclass(frozen=True)
class ObservationSpec:
    """Ordered terms plus history length; flattened oldest-first, term-major inside a step."""

    terms: tuple[ObsTerm, ...]
    history_length: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.terms, (str, bytes)) or not isinstance(self.terms, (list, tuple)):
            raise SpecError(f"observation.terms must be a list, got {type(self.terms).__name__}")
        terms = tuple(self.terms)
        if not terms:
            raise SpecError("observation.terms is empty")
        for i, t in enumerate(terms):
            if not isinstance(t, ObsTerm):
                raise SpecError(f"observation.terms[{i}] is not an ObsTerm: {t!r}")
        object.__setattr__(self, "terms", terms)
        seen: set[str] = set()
        for t in terms:
            if t.name in seen:
                raise SpecError(f"observation term name '{t.name}' is used twice")
            seen.add(t.name)
        for kind in ("last_action", "command"):
            named = [t.name for t in terms if t.kind == kind]
            if len(named) > 1:
                raise SpecError(f"observation terms {named} are all kind {kind}; at most one")
        if isinstance(self.history_length, bool) or not isinstance(
                self.history_length, (int, np.integer)) or self.history_length < 1:
            raise SpecError(f"observation.history_length must be a positive integer, "
                            f"got {self.history_length!r}")
        object.__setattr__(self, "history_length", int(self.history_length))

    # -- sizes ----------------------------------------------------------------------------
    @property
    def step_size(self) -> int:
        """Numbers in one time step (all terms)."""
        return sum(t._resolved_size() for t in self.terms)

    @property
    def size(self) -> int:
        """Length of the flattened observation vector (step_size * history_length)."""
        return self.step_size * self.history_length

    def term_slices(self) -> dict[str, slice]:
        """Where each term sits inside one step."""
        out, start = {}, 0
        for t in self.terms:
            out[t.name] = slice(start, start + t._resolved_size())
            start += t._resolved_size()
        return out

    def term(self, name: str) -> ObsTerm:
        for t in self.terms:
            if t.name == name:
                return t
        raise SpecError(f"no observation term named '{name}'; terms: "
                        f"{[t.name for t in self.terms]}")

    # -- topics ---------------------------------------------------------------------------
    @property
    def topics(self) -> tuple[str, ...]:
        """Distinct input topics, in first-use order."""
        out: list[str] = []
        for t in self.terms:
            if t.topic is not None and t.topic not in out:
                out.append(t.topic)
        return tuple(out)

    @property
    def privileged_topics(self) -> tuple[str, ...]:
        out: list[str] = []
        for t in self.terms:
            if t.is_privileged and t.topic is not None and t.topic not in out:
                out.append(t.topic)
        return tuple(out)

    def require_no_privileged(self) -> None:
        """Refuse simulation-only inputs (a student must run on real sensors alone)."""
        for t in self.terms:
            if t.is_privileged:
                why = f"topic '{t.topic}'" if t.topic and t.topic.lstrip("/").startswith(
                    PRIVILEGED_PREFIX) else "privileged: true"
                raise SpecError(f"observation term '{t.name}' is privileged ({why}); a student "
                                f"observation may only use real sensors")

    def with_action_size(self, action_size: int) -> ObservationSpec:
        """Fill in (or check) the size of the last_action term."""
        terms = []
        for t in self.terms:
            if t.kind == "last_action":
                if t.size is None:
                    t = replace(t, size=action_size)
                elif t.size != action_size:
                    raise SpecError(f"observation term '{t.name}' (last_action) has size "
                                    f"{t.size} but the action has {action_size} joints")
            terms.append(t)
        return replace(self, terms=tuple(terms))

    # -- dict / YAML ----------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ObservationSpec:
        _check_keys(d, ("terms", "history_length"), "observation")
        if "terms" not in d:
            raise SpecError("observation has no terms")
        terms = d["terms"]
        if not isinstance(terms, (list, tuple)):
            raise SpecError(f"observation.terms must be a list, got {type(terms).__name__}")
        return cls(terms=tuple(ObsTerm.from_dict(t, f"observation.terms[{i}]")
                               for i, t in enumerate(terms)),
                   history_length=d.get("history_length", 1))

    def to_dict(self) -> dict[str, Any]:
        return {"history_length": self.history_length,
                "terms": [t.to_dict() for t in self.terms]}


# ---------------------------------------------------------------------------------------------
# action spec

@dataclass(frozen=True)
class ActionSpec:
    """Policy output -> joint command: command = clip(raw * scale + offset, lower, upper)."""

    joints: tuple[str, ...]
    scale: float | tuple[float, ...] = 1.0
    offset: float | tuple[float, ...] = 0.0
    lower: float | tuple[float, ...] | None = None
    upper: float | tuple[float, ...] | None = None
    _arrays: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        joints = _names(self.joints, "action.joints")
        object.__setattr__(self, "joints", joints)
        n = len(joints)
        for key in ("scale", "offset"):
            object.__setattr__(self, key, _scalar_or_vector(getattr(self, key), n, f"action.{key}"))
        for key in ("lower", "upper"):
            if getattr(self, key) is not None:
                object.__setattr__(self, key,
                                   _scalar_or_vector(getattr(self, key), n, f"action.{key}"))
        lo = _expand(self.lower, n) if self.lower is not None else np.full(n, -np.inf)
        hi = _expand(self.upper, n) if self.upper is not None else np.full(n, np.inf)
        for i, j in enumerate(joints):
            if not lo[i] < hi[i]:
                raise SpecError(f"action joint '{j}': lower {lo[i]} must be below upper {hi[i]}")
        self._arrays.update(scale=_expand(self.scale, n), offset=_expand(self.offset, n),
                            lower=lo, upper=hi, ones=np.ones(n), shape=(n,))

    @property
    def size(self) -> int:
        return len(self.joints)

    @property
    def default_pose(self) -> np.ndarray:
        """The command for a zero raw action (= offset), the natural hold/fallback pose."""
        return np.clip(self._arrays["offset"], self._arrays["lower"], self._arrays["upper"])

    @property
    def lower_array(self) -> np.ndarray:
        return self._arrays["lower"].copy()

    @property
    def upper_array(self) -> np.ndarray:
        return self._arrays["upper"].copy()

    def postprocess(self, raw: Any, out: np.ndarray | None = None) -> np.ndarray:
        """Scale, offset and clip a raw policy output; non-finite or wrong-size raw raises.

        The control loop's case (an array of the right shape, a float64 `out`) runs as five
        in-place operations; a non-finite result there goes through the checked path below,
        which raises naming the joints (or, for a finite raw that overflowed, clips it)."""
        arrays = self._arrays
        if out is not None and type(raw) is np.ndarray and raw.shape == arrays["shape"] \
                and out.dtype == np.float64:
            np.multiply(raw, arrays["scale"], out=out)  # float32 raw: cast exactly, as below
            np.add(out, arrays["offset"], out=out)
            if math.isfinite(out @ arrays["ones"]):  # NaN/Inf propagate into the sum
                np.maximum(out, arrays["lower"], out=out)  # = np.clip for lower < upper
                np.minimum(out, arrays["upper"], out=out)
                return out
        a = np.asarray(raw, dtype=np.float64)
        if a.shape != (self.size,):
            raise ValueError(f"raw action has shape {a.shape}; expected ({self.size},) for "
                             f"joints {list(self.joints)}")
        if not np.isfinite(a).all():
            bad = [self.joints[i] for i in np.flatnonzero(~np.isfinite(a))]
            raise ValueError(f"raw action is not finite for joint(s) {bad}")
        if out is None:
            out = np.empty(self.size, dtype=np.float64)
        np.multiply(a, self._arrays["scale"], out=out)
        np.add(out, self._arrays["offset"], out=out)
        np.clip(out, self._arrays["lower"], self._arrays["upper"], out=out)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ActionSpec:
        _check_keys(d, ("joints", "scale", "offset", "lower", "upper"), "action")
        if "joints" not in d:
            raise SpecError("action has no joints")
        return cls(**dict(d))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"joints": list(self.joints), "scale": _plain(self.scale),
                             "offset": _plain(self.offset)}
        if self.lower is not None:
            d["lower"] = _plain(self.lower)
        if self.upper is not None:
            d["upper"] = _plain(self.upper)
        return d


# ---------------------------------------------------------------------------------------------
# policy spec

@dataclass(frozen=True)
class PolicySpec:
    """Observation + action + control rate: everything a policy file must agree with."""

    observation: ObservationSpec
    action: ActionSpec
    rate_hz: float

    def __post_init__(self) -> None:
        if not isinstance(self.observation, ObservationSpec):
            raise SpecError(f"policy spec observation must be an ObservationSpec, "
                            f"got {type(self.observation).__name__}")
        if not isinstance(self.action, ActionSpec):
            raise SpecError(f"policy spec action must be an ActionSpec, "
                            f"got {type(self.action).__name__}")
        rate = _finite_float(self.rate_hz, "rate_hz")
        if rate <= 0:
            raise SpecError(f"rate_hz must be positive, got {rate}")
        object.__setattr__(self, "rate_hz", rate)
        object.__setattr__(self, "observation", self.observation.with_action_size(
            self.action.size))

    @property
    def period_s(self) -> float:
        return 1.0 / self.rate_hz

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PolicySpec:
        _check_keys(d, ("observation", "action", "rate_hz"), "policy spec")
        for key in ("observation", "action", "rate_hz"):
            if key not in d:
                raise SpecError(f"policy spec has no '{key}'")
        return cls(observation=ObservationSpec.from_dict(d["observation"]),
                   action=ActionSpec.from_dict(d["action"]), rate_hz=d["rate_hz"])

    def to_dict(self) -> dict[str, Any]:
        return {"observation": self.observation.to_dict(), "action": self.action.to_dict(),
                "rate_hz": self.rate_hz}

    def to_yaml(self) -> str:
        import yaml
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)


def load_policy_spec(path_or_dict: str | Path | Mapping[str, Any]) -> PolicySpec:
    """Load a PolicySpec from a YAML file path or an already-parsed mapping."""
    if isinstance(path_or_dict, Mapping):
        return PolicySpec.from_dict(path_or_dict)
    import yaml
    path = Path(path_or_dict)
    try:
        text = path.read_text()
    except OSError as e:
        raise SpecError(f"cannot read policy spec '{path}': {e}") from None
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not a text file (expected a policy spec YAML)") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SpecError(f"policy spec '{path}' is not valid YAML ({yaml_problem(e)})") from None
    if not isinstance(data, Mapping):
        raise SpecError(f"policy spec '{path}' must be a mapping with observation, action "
                        f"and rate_hz")
    try:
        return PolicySpec.from_dict(data)
    except SpecError as e:
        raise SpecError(f"{path}: {e}") from None


def dump_policy_spec(spec: PolicySpec, path: str | Path) -> Path:
    """Write a PolicySpec as YAML (loads back to an equal spec)."""
    path = Path(path)
    path.write_text(spec.to_yaml())
    return path
