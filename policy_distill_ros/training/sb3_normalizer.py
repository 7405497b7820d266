"""Stable-Baselines3 observation statistics without running a pickle.

``VecNormalize.save(path)`` pickles the whole wrapper. It is read here with a restricted
unpickler that only materialises numpy arrays/dtypes and replaces the SB3/Gymnasium classes by
inert records; any other global in the file is refused before it can run. The same statistics as
JSON (``{mean, var, epsilon, clip_obs}``, written by scripts/train_teacher.py) are read too. Every
number is checked (finite, non-negative variance, positive epsilon and clip) and the normalizer is
``clip((x - mean) / sqrt(var + eps), -clip_obs, clip_obs)`` (``eps_placement="var"``).
"""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from .import_errors import TeacherImportError, first_sentence
from .normalizer import EmpiricalNormalizer, NormalizerConfig


class _InertRecord:
    """Stands in for an allowed SB3/Gymnasium class: keeps the pickled state, runs no code."""

    def __init__(self, *args) -> None:
        self.args = args
        self.state: dict = {}

    def __setstate__(self, state) -> None:
        if (
            isinstance(state, tuple)
            and len(state) == 2
            and all(isinstance(p, (dict, type(None))) for p in state)
        ):
            state = {**(state[0] or {}), **(state[1] or {})}  # (dict, slotstate)
        self.state = state if isinstance(state, dict) else {"value": state}


def _inert_factory(*args) -> _InertRecord:
    return _InertRecord(*args)


class _RestrictedUnpickler(pickle.Unpickler):
    _RECORDS = {
        ("stable_baselines3.common.vec_env.vec_normalize", "VecNormalize"),
        ("stable_baselines3.common.running_mean_std", "RunningMeanStd"),
    }
    _NUMPY = {
        ("numpy", "dtype"), ("numpy", "ndarray"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    }

    def find_class(self, module: str, name: str):
        if (
            (module, name) in self._RECORDS
            or module.startswith("gymnasium.spaces")
            or module.startswith("gym.spaces")
        ):
            return type(name, (_InertRecord,), {})
        if module.startswith("numpy.random"):  # spaces carry their RNG; we never need it
            return _inert_factory
        if (module, name) in self._NUMPY:
            import importlib
            return getattr(importlib.import_module(module), name)
        if module == "copyreg" and name == "_reconstructor":
            return _reconstruct_inert
        raise pickle.UnpicklingError(
            f"global {module}.{name} is not allowed in a VecNormalize file"
        )


def _reconstruct_inert(cls, base, state):
    if isinstance(cls, type) and issubclass(cls, _InertRecord):
        return cls()
    raise pickle.UnpicklingError(f"copyreg reconstruction of {cls!r} is not allowed")


def _numeric(value, where: Path, name: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise TeacherImportError(
            f"{where}: {name} is not a numeric array ({type(value).__name__})"
        ) from None
    if not np.isfinite(array).all():
        raise TeacherImportError(
            f"{where}: {name} holds {int((~np.isfinite(array)).sum())} NaN/Inf value(s) of "
            f"{array.size}; refusing statistics that would turn observations into NaN"
        )
    return array


def _vecnormalize_stats(path: Path) -> dict | None:
    try:
        with open(path, "rb") as f:
            root = _RestrictedUnpickler(f).load()
    except OSError as exc:
        raise TeacherImportError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError, ValueError,
            KeyError, IndexError, MemoryError) as exc:
        raise TeacherImportError(
            f"{path}: refused or unreadable VecNormalize file "
            f"({first_sentence(exc) or type(exc).__name__})"
        ) from None
    if (
        not isinstance(root, _InertRecord)
        or type(root).__name__ != "VecNormalize"
        or not isinstance(root.state, dict)
    ):
        raise TeacherImportError(f"{path}: not a VecNormalize pickle")
    state = root.state
    if not state.get("norm_obs", True):
        return None
    if state.get("norm_obs_keys"):
        raise TeacherImportError(
            f"{path}: dict-observation VecNormalize (norm_obs_keys) is not supported"
        )
    rms = state.get("obs_rms")
    if not isinstance(rms, _InertRecord) or not isinstance(rms.state, dict):
        raise TeacherImportError(f"{path}: no obs_rms statistics")
    missing = [k for k in ("mean", "var") if k not in rms.state]
    if missing:
        raise TeacherImportError(f"{path}: obs_rms has no {' or '.join(missing)}")
    return {
        "mean": rms.state["mean"],
        "var": rms.state["var"],
        "count": rms.state.get("count", 0.0),
        "epsilon": state.get("epsilon", 1e-8),
        "clip_obs": state.get("clip_obs"),
    }


def _json_stats(path: Path) -> dict:
    try:
        d = json.loads(path.read_text())
    except OSError as exc:
        raise TeacherImportError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise TeacherImportError(
            f"{path}: not JSON (expected {{mean, var, epsilon, clip_obs}})"
        ) from None
    if not isinstance(d, dict) or "mean" not in d or "var" not in d:
        raise TeacherImportError(
            f"{path}: expected a JSON object with 'mean' and 'var' (and epsilon, clip_obs)"
        )
    return {
        "mean": d["mean"],
        "var": d["var"],
        "count": d.get("count", 0.0),
        "epsilon": d.get("epsilon", 1e-8),
        "clip_obs": d.get("clip_obs"),
    }


def read_normalizer_stats(path: str | os.PathLike, file_format: str | None = None) -> dict | None:
    """SB3 observation statistics {mean, var, count, epsilon, clip_obs} (numbers checked) from a
    ``VecNormalize.save()`` pickle or its JSON form (``file_format`` "pickle" / "json"; default:
    by suffix); None when VecNormalize did not normalize observations."""
    path = Path(path)
    if file_format not in (None, "json", "pickle"):
        raise ValueError(
            f"read_normalizer_stats: file_format must be 'json' or 'pickle', got {file_format!r}"
        )
    as_json = file_format == "json" or (file_format is None and path.suffix == ".json")
    raw = _json_stats(path) if as_json else _vecnormalize_stats(path)
    if raw is None:
        return None
    stats = {"mean": _numeric(raw["mean"], path, "mean"), "var": _numeric(raw["var"], path, "var")}
    if stats["mean"].size != stats["var"].size:
        raise TeacherImportError(
            f"{path}: mean has {stats['mean'].size} entries, var {stats['var'].size}"
        )
    if (stats["var"] < 0).any():
        raise TeacherImportError(f"{path}: var has negative entries")
    for key in ("count", "epsilon", "clip_obs"):
        value = raw[key]
        if key == "clip_obs" and value is None:
            stats[key] = None
            continue
        number = _numeric(value, path, key)
        if number.size != 1 or (key != "count" and not number[0] > 0):
            raise TeacherImportError(f"{path}: {key} must be a positive number, got {value!r}")
        stats[key] = float(number[0])
    return stats


def stats_normalizer(stats: dict, where: Path, obs_size: int | None) -> EmpiricalNormalizer:
    if obs_size is not None and stats["mean"].size != obs_size:
        raise TeacherImportError(
            f"{where}: statistics for {stats['mean'].size} observations, policy takes {obs_size}"
        )
    clip = stats["clip_obs"]
    normalizer = EmpiricalNormalizer(
        NormalizerConfig(
            size=int(stats["mean"].size),
            eps=stats["epsilon"],
            eps_placement="var",
            clip=clip if clip else None,
        )
    )
    normalizer.set_statistics(
        torch.from_numpy(stats["mean"]), torch.from_numpy(stats["var"]), stats["count"]
    )
    return normalizer.freeze()


def load_vecnormalize(
    path: str | os.PathLike, obs_size: int | None = None
) -> EmpiricalNormalizer | None:
    """Observation statistics of a saved SB3 ``VecNormalize``; None if it did not normalize
    observations."""
    stats = read_normalizer_stats(path)
    return None if stats is None else stats_normalizer(stats, Path(path), obs_size)
