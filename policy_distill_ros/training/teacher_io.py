"""Our teacher checkpoint format: a directory with ``model.safetensors`` and ``teacher.json``.

No pickle anywhere: weights are safetensors tensors (``policy.*`` = ``TeacherPolicy`` state dict,
``normalizer.*`` = ``EmpiricalNormalizer`` buffers), the architecture and metadata are JSON::

    {"format": "policy_distill_ros.teacher", "version": 1,
     "architecture": TeacherConfig.to_dict(), "normalizer": NormalizerConfig.to_dict() | null,
     "info": {...free-form: source library, env id, observation/action spec...},
     "sha256": "<content hash>"}

The content hash (sha256) covers the canonical JSON of architecture + normalizer config and every
tensor (name, dtype, shape, bytes, in sorted order), so it identifies what the teacher computes:
re-saving the same teacher gives the same hash whatever the free-form ``info`` says. It goes into
the provenance of every student distilled from it, and loading refuses a directory whose weights
no longer match it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .networks import TeacherConfig, TeacherPolicy
from .normalizer import EmpiricalNormalizer, NormalizerConfig

FORMAT = "policy_distill_ros.teacher"
VERSION = 1
WEIGHTS_FILE = "model.safetensors"
META_FILE = "teacher.json"


class TeacherFormatError(ValueError):
    """A teacher directory is missing, malformed or does not match its own hash."""


@dataclass
class TeacherInfo:
    """What a loaded teacher is: content hash, architecture and free-form info (specs, source)."""

    sha256: str
    architecture: TeacherConfig
    normalizer: NormalizerConfig | None
    info: dict = field(default_factory=dict)
    path: str | None = None


def _state_tensors(teacher: TeacherPolicy, normalizer: EmpiricalNormalizer | None
                   ) -> dict[str, torch.Tensor]:
    tensors = {f"policy.{k}": v.detach().cpu().contiguous()
               for k, v in teacher.state_dict().items()}
    if normalizer is not None:
        tensors.update({f"normalizer.{k}": v.detach().cpu().contiguous()
                        for k, v in normalizer.state_dict().items()})
    return tensors


def content_hash(architecture: dict, normalizer: dict | None,
                 tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over canonical JSON of the configs and every tensor in sorted-name order."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"architecture": architecture, "normalizer": normalizer},
                             sort_keys=True, separators=(",", ":")).encode())
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{list(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes()
                      if tensor.numel() else b"")
    return digest.hexdigest()


def teacher_hash(teacher: TeacherPolicy, normalizer: EmpiricalNormalizer | None) -> str:
    """The hash ``save_teacher`` would record for these modules."""
    return content_hash(teacher.config.to_dict(),
                        normalizer.config.to_dict() if normalizer else None,
                        _state_tensors(teacher, normalizer))


def _json_safe(info: dict) -> dict:
    try:
        return json.loads(json.dumps(info))
    except (TypeError, ValueError) as exc:
        raise TeacherFormatError(f"save_teacher: info must be JSON-serializable "
                                 f"({exc})") from None


def save_teacher(teacher: TeacherPolicy, normalizer: EmpiricalNormalizer | None,
                 directory: str | os.PathLike, info: dict | None = None) -> str:
    """Write ``directory/model.safetensors`` and ``directory/teacher.json``; returns the sha256.

    Each file is written to a temporary name and renamed, weights first, so a reader never sees
    a ``teacher.json`` whose weights are missing.
    """
    if not isinstance(teacher, TeacherPolicy):
        raise TypeError(f"save_teacher: expected a TeacherPolicy, "
                        f"got {type(teacher).__name__}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = _state_tensors(teacher, normalizer)
    architecture = teacher.config.to_dict()
    norm_cfg = normalizer.config.to_dict() if normalizer is not None else None
    sha = content_hash(architecture, norm_cfg, tensors)
    meta = {"format": FORMAT, "version": VERSION, "architecture": architecture,
            "normalizer": norm_cfg,
            "normalizer_frozen": bool(normalizer.frozen) if normalizer is not None else None,
            "info": _json_safe(info or {}), "sha256": sha}
    tmp_weights = directory / f".{WEIGHTS_FILE}.tmp-{os.getpid()}"
    tmp_meta = directory / f".{META_FILE}.tmp-{os.getpid()}"
    try:
        save_file(tensors, str(tmp_weights), metadata={"format": FORMAT, "sha256": sha})
        os.replace(tmp_weights, directory / WEIGHTS_FILE)
        tmp_meta.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        os.replace(tmp_meta, directory / META_FILE)
    finally:
        for tmp in (tmp_weights, tmp_meta):
            if tmp.exists():
                tmp.unlink()
    return sha


def _resolve_dir(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.is_file() and path.name in (META_FILE, WEIGHTS_FILE):
        path = path.parent
    if not (path / META_FILE).is_file():
        raise TeacherFormatError(f"{path}: not a teacher directory (no {META_FILE})")
    if not (path / WEIGHTS_FILE).is_file():
        raise TeacherFormatError(f"{path}: {META_FILE} present but {WEIGHTS_FILE} missing")
    return path


def read_teacher_info(path: str | os.PathLike) -> dict:
    """The raw ``teacher.json`` (cheap: no weights are read)."""
    directory = _resolve_dir(path)
    try:
        meta = json.loads((directory / META_FILE).read_text())
    except json.JSONDecodeError as exc:
        raise TeacherFormatError(f"{directory / META_FILE}: invalid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise TeacherFormatError(f"{directory / META_FILE}: format is not {FORMAT!r}")
    if meta.get("version") != VERSION:
        raise TeacherFormatError(f"{directory / META_FILE}: unsupported version "
                                 f"{meta.get('version')!r} (this build reads {VERSION})")
    for key in ("architecture", "sha256"):
        if key not in meta:
            raise TeacherFormatError(f"{directory / META_FILE}: missing {key!r}")
    return meta


def load_teacher(path: str | os.PathLike, verify_hash: bool = True
                 ) -> tuple[TeacherPolicy, EmpiricalNormalizer | None, TeacherInfo]:
    """Load a teacher saved by :func:`save_teacher`, in eval mode with gradients off.

    Returns ``(teacher, normalizer or None, TeacherInfo)``. Raises :class:`TeacherFormatError`
    naming the file and the key at fault.
    """
    directory = _resolve_dir(path)
    meta = read_teacher_info(directory)
    try:
        architecture = TeacherConfig.from_dict(meta["architecture"])
        norm_cfg = (NormalizerConfig.from_dict(meta["normalizer"]) if meta.get("normalizer")
                    else None)
    except (TypeError, ValueError) as exc:
        raise TeacherFormatError(f"{directory / META_FILE}: {exc}") from None
    try:
        tensors = load_file(str(directory / WEIGHTS_FILE))
    except (SafetensorError, OSError) as exc:  # a truncated or corrupt file, or none
        raise TeacherFormatError(f"{directory / WEIGHTS_FILE}: "
                                 f"unreadable ({exc})") from None
    if verify_hash:
        actual = content_hash(meta["architecture"], meta.get("normalizer"), tensors)
        if actual != meta["sha256"]:
            raise TeacherFormatError(f"{directory}: content hash mismatch (teacher.json says "
                                     f"{meta['sha256'][:12]}..., weights give {actual[:12]}...)")
    teacher = TeacherPolicy(architecture)
    policy_state = {k[len("policy."):]: v for k, v in tensors.items() if k.startswith("policy.")}
    _load_strict(teacher, policy_state, directory / WEIGHTS_FILE, "policy.")
    normalizer = None
    if norm_cfg is not None:
        normalizer = EmpiricalNormalizer(norm_cfg)
        norm_state = {k[len("normalizer."):]: v for k, v in tensors.items()
                      if k.startswith("normalizer.")}
        _load_strict(normalizer, norm_state, directory / WEIGHTS_FILE, "normalizer.")
        if meta.get("normalizer_frozen", True):
            normalizer.freeze()
        normalizer.eval()
    elif any(k.startswith("normalizer.") for k in tensors):
        raise TeacherFormatError(f"{directory / WEIGHTS_FILE}: normalizer tensors present but "
                                 f"teacher.json declares no normalizer")
    teacher.eval()
    teacher.requires_grad_(False)
    info = TeacherInfo(sha256=meta["sha256"], architecture=architecture, normalizer=norm_cfg,
                       info=dict(meta.get("info") or {}), path=str(directory))
    return teacher, normalizer, info


def _load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], where: Path,
                 prefix: str) -> None:
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise TeacherFormatError(f"{where}: keys do not match the architecture: missing "
                                 f"{[prefix + k for k in missing]}, "
                                 f"unexpected {[prefix + k for k in unexpected]}")
    for key, wanted in expected.items():  # module order: the first layer at fault is named
        if tuple(state[key].shape) != tuple(wanted.shape):
            raise TeacherFormatError(f"{where}: {prefix}{key} has shape "
                                     f"{list(state[key].shape)}, architecture "
                                     f"needs {list(wanted.shape)}")
    module.load_state_dict(state, strict=True)
