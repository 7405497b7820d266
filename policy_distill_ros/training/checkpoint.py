"""Training checkpoints: everything a distillation run needs to continue where it stopped.

A checkpoint is one file, `torch.save` of plain state dicts: parameters (student, its normalizer,
feature projections), optimizer, LR schedule, the sampler's generator, the torch / numpy / CUDA
RNG states, the teacher-feature statistics, the epoch, the history and the best epoch so far. It
is read back with `torch.load(weights_only=True)`, so nothing but tensors and plain containers is
ever unpickled. One file rather than safetensors + JSON: the optimizer state is nested, and one
file written under a temporary name and renamed is never seen half-written, so a run killed at
any moment resumes from its last complete checkpoint.

Each checkpoint records the identity of its run (training config, student architecture, teacher
hash, dataset hash, process count). Resuming under another identity would not continue the same
run, so it is refused with one line naming the first field that differs.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .trainer import TrainingError

__all__ = ["CheckpointError", "CheckpointOptions", "checkpoint_path", "latest_checkpoint",
           "resolve_resume", "save_checkpoint", "load_checkpoint", "identity_difference",
           "dataset_digest", "rng_state", "set_rng_state", "FORMAT", "VERSION"]

FORMAT = "policy_distill_ros.train_checkpoint"
VERSION = 1
PATTERN = "epoch_*.pt"


class CheckpointError(TrainingError):
    """A checkpoint is missing, unreadable, or belongs to another run; the message says which."""


@dataclass
class CheckpointOptions:
    """Where and how often the runner writes checkpoints, and which one it resumes from."""

    directory: Path | None = None       # epoch_NNNN.pt files go here
    every_epochs: int = 0               # 0 = none; otherwise also the run's last epoch
    resume: Path | None = None          # a checkpoint file, or a directory (its newest)

    def __post_init__(self) -> None:
        if isinstance(self.every_epochs, bool) or not isinstance(self.every_epochs, int) \
                or self.every_epochs < 0:
            raise ValueError(f"checkpoint_every must be an integer >= 0 (epochs; 0 = off), got "
                             f"{self.every_epochs!r}")
        if self.every_epochs and self.directory is None:
            raise ValueError("checkpoint_every > 0 needs a checkpoint directory")


def checkpoint_path(directory: str | os.PathLike, epoch: int) -> Path:
    return Path(directory) / f"epoch_{epoch:04d}.pt"


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    """The checkpoint of the highest epoch in `directory`, None if it holds none."""
    found = sorted(Path(directory).glob(PATTERN))
    return found[-1] if found else None


def resolve_resume(path: str | os.PathLike) -> Path:
    """`path` itself (a file) or the newest checkpoint in it (a directory)."""
    path = Path(path)
    if path.is_dir():
        latest = latest_checkpoint(path)
        if latest is None:
            raise CheckpointError(f"resume: {path} holds no checkpoint ({PATTERN})")
        return latest
    if not path.is_file():
        raise CheckpointError(f"resume: no such checkpoint file or directory {path}")
    return path


def save_checkpoint(path: str | os.PathLike, payload: dict) -> Path:
    """Write atomically (temporary name, fsync, rename): a reader sees all of it or nothing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save({"format": FORMAT, "version": VERSION, **payload}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_checkpoint(path: str | os.PathLike) -> dict:
    """The checkpoint's dict (tensors and plain containers only), format and version checked."""
    path = Path(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, EOFError, RuntimeError, ValueError, pickle.UnpicklingError) as exc:
        text = " ".join(str(exc).split())[:160]
        raise CheckpointError(f"{path}: not a readable training checkpoint ({text})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a training checkpoint (format is not {FORMAT!r})")
    if data.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {data.get('version')!r}, this build "
                              f"reads {VERSION}")
    return data


def _flat(value: Any, prefix: str, out: dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, dict):
        for key in sorted(value):
            _flat(value[key], f"{prefix}.{key}" if prefix else str(key), out)
    else:
        out[prefix] = value
    return out


def identity_difference(saved: dict, current: dict) -> str | None:
    """'<field> is <saved> in the checkpoint, <current> now' for the first field (dotted path)
    that differs; None when both describe the same run."""
    # JSON round trip: tuples and lists, ints and floats compare as the YAML would give them
    a = _flat(json.loads(json.dumps(saved)), "", {})
    b = _flat(json.loads(json.dumps(current)), "", {})
    for key in sorted(set(a) | set(b)):
        if a.get(key, "<absent>") != b.get(key, "<absent>"):
            return (f"{key} is {a.get(key, '<absent>')!r} in the checkpoint, "
                    f"{b.get(key, '<absent>')!r} in this run")
    return None


def dataset_digest(*datasets) -> str:
    """sha256 over the arrays that training reads (rows, teacher rows, actions, episodes)."""
    digest = hashlib.sha256()
    for dataset in datasets:
        for array in (dataset.student_obs, dataset.teacher_obs, dataset.actions,
                      dataset.episode_id):
            array = np.ascontiguousarray(array)
            digest.update(f"{array.dtype}|{array.shape}|".encode())
            digest.update(array.tobytes())
    return digest.hexdigest()


def rng_state() -> dict:
    """torch, numpy (and CUDA) global RNG states as tensors and plain values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)),
                       "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
