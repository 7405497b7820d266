"""Export a student to the deployable ONNX policy file, blocked by a torch-vs-ONNX-Runtime parity
check.

The exported graph is the deterministic policy with normalization inside:
``actions = act(student(normalizer(obs)))`` (``act`` = identity, or tanh for squashed students),
input ``obs`` float32 ``[1, obs_size]`` and output ``actions`` float32 ``[1, action_size]``; a
recurrent student adds input ``h_in`` and output ``h_out`` (``[num_layers, 1, hidden_size]``).
The robot runs batch 1, so the batch axis is fixed to 1 (no symbolic shapes to validate).

Exporter: the TorchScript exporter (``torch.onnx.export(..., dynamo=False)``, opset 17) by
default. Measured on our students (torch 2.13) both exporters emit the same operators
(Sub/Div/Gemm/Elu, Conv, GRU) and the same parity (~1e-7), but the dynamo exporter adds per-node
source-trace metadata and value_info (files 20-50% larger), for some GRU sizes keeps the
gate re-ordering of ``weight_hh`` as Slice/Concat nodes in the graph (20 vs 16 nodes at hidden
64), needs opset >= 18 (the TorchScript one also serves older ONNX Runtime builds on robots) and
takes 1-3 s with console output instead of 0.02-0.08 s. The TorchScript exporter is deprecated
since torch 2.9; ``ExportConfig(exporter="dynamo")`` selects the torch.export-based one, which
passes the same parity check.

Safety: the parity check (max abs error of actions, and of ``h_out`` along a recurrent rollout,
<= ``parity_atol``, 1e-5 in fp32) runs on held-out inputs before anything is written; a failing
export raises :class:`ExportParityError` and leaves no file. A passing model is written with its
metadata to a temporary file next to ``path``, re-loaded and re-checked from disk (and through
``core.policy_file.OnnxPolicy``), then atomically renamed onto ``path``.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from .networks import BasePolicy
from .normalizer import EmpiricalNormalizer

EXPORTERS = ("torchscript", "dynamo")


@dataclass
class ExportConfig:
    """How to export and how strictly to check. ``opset`` None = 17 (torchscript) / 18 (dynamo)."""

    exporter: str = "torchscript"
    opset: int | None = None
    parity_atol: float = 1e-5
    parity_random_samples: int = 64
    parity_seed: int = 0

    def __post_init__(self) -> None:
        if self.exporter not in EXPORTERS:
            raise ValueError(
                f"ExportConfig.exporter must be one of {EXPORTERS}, got {self.exporter!r}"
            )
        if self.opset is None:
            self.opset = 17 if self.exporter == "torchscript" else 18
        minimum = 17 if self.exporter == "torchscript" else 18
        if not isinstance(self.opset, int) or self.opset < minimum:
            raise ValueError(
                f"ExportConfig.opset must be an int >= {minimum} for the {self.exporter} exporter, "
                f"got {self.opset!r}"
            )
        if not self.parity_atol > 0:
            raise ValueError(f"ExportConfig.parity_atol must be > 0, got {self.parity_atol!r}")
        if not isinstance(self.parity_random_samples, int) or self.parity_random_samples < 0:
            raise ValueError(f"ExportConfig.parity_random_samples must be an int >= 0, "
                             f"got {self.parity_random_samples!r}")


@dataclass
class ParityReport:
    """Torch vs ONNX Runtime on held-out inputs; stored in the policy file's provenance."""

    max_abs_error: float
    mean_abs_error: float
    max_abs_error_hidden: float | None
    samples: int
    atol: float
    exporter: str
    opset: int

    @property
    def passed(self) -> bool:
        worst = max(self.max_abs_error, self.max_abs_error_hidden or 0.0)
        return bool(np.isfinite(worst)) and worst <= self.atol

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["passed"] = self.passed
        return d


class ExportParityError(RuntimeError):
    """The exported graph disagrees with torch; nothing was written."""

    def __init__(self, message: str, report: ParityReport | None = None) -> None:
        super().__init__(message)
        self.report = report


class DeterministicPolicy(nn.Module):
    """obs -> actions with normalization inside (what the ONNX graph computes)."""

    def __init__(self, student: BasePolicy, normalizer: EmpiricalNormalizer) -> None:
        super().__init__()
        self.normalizer = normalizer
        self.student = student

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.student.deterministic(self.student(self.normalizer(obs)))


class RecurrentDeterministicPolicy(nn.Module):
    """(obs, h_in) -> (actions, h_out) for recurrent students."""

    def __init__(self, student: BasePolicy, normalizer: EmpiricalNormalizer) -> None:
        super().__init__()
        self.normalizer = normalizer
        self.student = student

    def forward(self, obs: torch.Tensor, h_in: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.student(self.normalizer(obs), h_in)
        return self.student.deterministic(out), out.hidden


def inference_module(student: BasePolicy, normalizer: EmpiricalNormalizer) -> nn.Module:
    """A frozen, eval-mode, float32 copy (the caller's modules are left untouched)."""
    if getattr(student.config, "obs_size", normalizer.size) != normalizer.size:
        raise ValueError(
            f"export: student obs_size {student.config.obs_size} "
            f"!= normalizer size {normalizer.size}"
        )
    norm = copy.deepcopy(normalizer).freeze().float().eval()
    net = copy.deepcopy(student).float().eval()
    wrapper_cls = RecurrentDeterministicPolicy if student.is_recurrent else DeterministicPolicy
    module = wrapper_cls(net, norm).eval()
    module.requires_grad_(False)
    return module


def _initial_hidden(module: nn.Module) -> torch.Tensor:
    return module.student.initial_state(1)


def export_onnx(module: nn.Module, trace_obs: torch.Tensor,
                config: ExportConfig) -> tuple[onnx.ModelProto, list[str]]:
    """Trace the inference module into an in-memory ONNX model (nothing is written).

    Returns the model and the exporter's warnings (tracer warnings about Python control flow,
    deprecations). They are not shown: the parity check is the real guard, and a blocked export
    quotes them in its error.
    """
    recurrent = isinstance(module, RecurrentDeterministicPolicy)
    args = (trace_obs, _initial_hidden(module)) if recurrent else (trace_obs,)
    input_names = ["obs", "h_in"] if recurrent else ["obs"]
    output_names = ["actions", "h_out"] if recurrent else ["actions"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        graph = {"input_names": input_names, "output_names": output_names,
                 "opset_version": config.opset}
        if config.exporter == "torchscript":
            buffer = io.BytesIO()
            torch.onnx.export(module, args, buffer, **graph, dynamo=False,
                              do_constant_folding=True)
            model = onnx.load_from_string(buffer.getvalue())
        else:
            program = torch.onnx.export(module, args, None, **graph, dynamo=True, verbose=False)
            model = program.model_proto
    onnx.checker.check_model(model)
    messages = list(
        dict.fromkeys(f"{w.category.__name__}: {str(w.message).splitlines()[0]}" for w in caught)
    )
    return model, messages


def _session(model_bytes: bytes | str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(
        model_bytes, sess_options=options, providers=["CPUExecutionProvider"]
    )


def parity_inputs(
    sample_obs: torch.Tensor, normalizer: EmpiricalNormalizer, config: ExportConfig
) -> torch.Tensor:
    """Held-out inputs: every sample row but the first (the trace input) plus random draws
    around the normalizer statistics (3 std wide, to reach the tails)."""
    generator = torch.Generator().manual_seed(config.parity_seed)
    std = torch.sqrt(normalizer.var.float()).clamp_min(1e-3)
    noise = torch.randn(config.parity_random_samples, normalizer.size, generator=generator)
    random_rows = normalizer.mean.float() + 3.0 * std * noise
    return torch.cat([sample_obs[1:].float(), random_rows], dim=0)


def check_parity(module: nn.Module, model: onnx.ModelProto | bytes | str, inputs: torch.Tensor,
                 config: ExportConfig) -> ParityReport:
    """Run torch and ONNX Runtime on ``inputs`` one row at a time (batch 1, as on the robot).

    Recurrent models are rolled out over the rows as one sequence, each side feeding back its
    own ``h_out``, so drift of the recurrent state is measured too.
    """
    if isinstance(model, onnx.ModelProto):
        model = model.SerializeToString()
    session = _session(model)
    recurrent = isinstance(module, RecurrentDeterministicPolicy)
    errors: list[np.ndarray] = []
    hidden_error = 0.0
    h_torch = _initial_hidden(module) if recurrent else None
    h_onnx = h_torch.numpy().copy() if recurrent else None
    with torch.no_grad():
        for row in inputs:
            obs = row.reshape(1, -1).float()
            if recurrent:
                ref, h_torch = module(obs, h_torch)
                got, h_onnx = session.run(
                    ["actions", "h_out"], {"obs": obs.numpy(), "h_in": h_onnx}
                )
                hidden_error = max(hidden_error, float(np.max(np.abs(h_onnx - h_torch.numpy()))))
            else:
                ref = module(obs)
                (got,) = session.run(["actions"], {"obs": obs.numpy()})
            if got.shape != tuple(ref.shape):
                raise ExportParityError(
                    f"export: ONNX actions shape {got.shape} != torch {tuple(ref.shape)}"
                )
            errors.append(
                np.abs(got.astype(np.float64) - ref.numpy().astype(np.float64)).reshape(-1)
            )
    flat = np.concatenate(errors) if errors else np.zeros(1)
    if not np.all(np.isfinite(flat)):
        max_err = float("inf")
    else:
        max_err = float(flat.max())
    return ParityReport(
        max_abs_error=max_err,
        mean_abs_error=float(np.mean(flat)),
        max_abs_error_hidden=hidden_error if recurrent else None,
        samples=len(inputs),
        atol=config.parity_atol,
        exporter=config.exporter,
        opset=int(config.opset),
    )


def _recurrent_state(module: nn.Module) -> list[dict]:
    if not isinstance(module, RecurrentDeterministicPolicy):
        return []
    layers, size = module.student.hidden_shape
    return [{"input": "h_in", "output": "h_out", "shape": [layers, 1, size]}]


def _with_export_facts(meta, report: ParityReport, recurrent_state: list[dict]):
    """Copy of ``meta`` with the parity figures in provenance and the recurrent state declared."""
    provenance = dict(getattr(meta, "provenance", None) or {})
    metrics = dict(provenance.get("metrics") or {})
    metrics["onnx_parity"] = report.to_dict()
    provenance["metrics"] = metrics
    changes = {"provenance": provenance}
    if recurrent_state or getattr(meta, "recurrent_state", None):
        changes["recurrent_state"] = recurrent_state
    return dataclasses.replace(meta, **changes)


def attach_metadata(model: onnx.ModelProto, meta) -> onnx.ModelProto:
    """Copy of ``model`` whose ``metadata_props`` are ``meta.to_props()`` (replacing same-named
    keys)."""
    props = meta.to_props()
    out = onnx.ModelProto()
    out.CopyFrom(model)
    kept = [(p.key, p.value) for p in out.metadata_props if p.key not in props]
    del out.metadata_props[:]
    for key, value in kept + sorted(props.items()):
        entry = out.metadata_props.add()
        entry.key, entry.value = key, value
    return out


def _write_policy(model: onnx.ModelProto, meta, path: Path) -> None:
    """core's ``save_policy`` when it provides one (contract), else attach the props and write
    here."""
    try:
        from policy_distill_ros.core.policy_file import save_policy
    except ImportError:
        save_policy = None
    if save_policy is not None:
        save_policy(model, meta, path)
        return
    path.write_bytes(attach_metadata(model, meta).SerializeToString())


def _load_check(path: Path) -> None:
    """The file must load in the robot-side loader when it exists (shape and metadata checks)."""
    try:
        from policy_distill_ros.core.policy_file import OnnxPolicy
    except ImportError:
        return
    OnnxPolicy(path)


def _validate_sample_obs(sample_obs, size: int) -> torch.Tensor:
    obs = torch.as_tensor(np.asarray(sample_obs), dtype=torch.float32)
    if obs.dim() == 1:
        obs = obs.unsqueeze(0)
    if obs.dim() != 2 or obs.shape[1] != size or obs.shape[0] == 0:
        raise ValueError(f"export: sample_obs must be [N >= 1, {size}], got {list(obs.shape)}")
    if not torch.isfinite(obs).all():
        raise ValueError("export: sample_obs contains NaN or Inf")
    return obs


def export_policy(
    student: BasePolicy,
    normalizer: EmpiricalNormalizer,
    meta,
    path: str | os.PathLike,
    sample_obs,
    config: ExportConfig | None = None,
) -> ParityReport:
    """Export, check parity (raise and write nothing on failure), write atomically with metadata.

    ``meta`` is a ``core.policy_file.PolicyMetadata``; the parity figures are added to its
    ``provenance["metrics"]["onnx_parity"]`` and the recurrent state (if any) is declared.
    Returns the parity report.
    """
    config = config or ExportConfig()
    path = Path(path)
    obs = _validate_sample_obs(sample_obs, normalizer.size)
    module = inference_module(student, normalizer)
    model, export_warnings = export_onnx(module, obs[:1], config)
    held_out = parity_inputs(obs, normalizer, config)
    if len(held_out) == 0:
        raise ValueError(
            "export: no held-out parity inputs "
            "(give >= 2 sample_obs rows or parity_random_samples > 0)"
        )
    report = check_parity(module, model, held_out, config)
    if not report.passed:
        raise ExportParityError(
            f"export of {path.name} blocked: torch vs ONNX Runtime max abs error "
            f"{report.max_abs_error:.3g} (hidden {report.max_abs_error_hidden}) > {report.atol:g} "
            f"on {report.samples} held-out inputs"
            + "".join(f"\n  exporter said: {m}" for m in export_warnings if "Tracer" in m)[:2000],
            report,
        )
    final_meta = _with_export_facts(meta, report, _recurrent_state(module))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.exporting-{os.getpid()}.onnx")
    try:
        _write_policy(model, final_meta, tmp)
        from_disk = check_parity(module, str(tmp), held_out, config)
        if not from_disk.passed:
            raise ExportParityError(
                f"export of {path.name} blocked: the written file disagrees with torch "
                f"(max abs error {from_disk.max_abs_error:.3g})",
                from_disk,
            )
        _load_check(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)
    return report


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
