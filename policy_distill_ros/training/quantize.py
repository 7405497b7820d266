"""Quantized students: int8 and fp16 variants of an exported fp32 policy file, parity-bounded.

Variants (all through ONNX Runtime's own tooling; graph input `obs` and output `actions`, and a
recurrent student's `h_in`/`h_out`, stay float32, so the student node loads them unchanged):

- ``int8``: static quantization, QDQ format, int8 weights (per output channel) and int8
  activations whose ranges are calibrated (99.99th percentile) on observations the caller
  gives (recorded bags, or states the fp32 student visits on training seeds). ONNX Runtime
  fuses the QDQ pairs around Gemm/Conv into integer kernels; operators without an int8 kernel
  (Elu, GRU) stay float.
- ``int8_dynamic``: int8 weights, activations quantized per call from their observed range (no
  calibration). ONNX Runtime's dynamic quantizer handles MatMul, not Gemm, so Gemm nodes are
  first rewritten as MatMul + Add (the same arithmetic).
- Both int8 variants keep the normalizer and the first layer in float32 by default
  (`float_first_layer`; measured on the demo student: all-int8 moved commands by up to 0.38
  (static, beyond its bound) / 0.20 (dynamic), first layer in float 0.25 / 0.09).
- ``fp16``: every float weight and activation in half precision (`onnxruntime.transformers.
  float16`), casts at the float32 inputs and outputs. ONNX Runtime's x86 CPU provider upcasts
  such a graph to float32 when it loads it (ORT 1.32: no fp16 node is left in its optimized
  graph), so the file halves, the speed does not, and the error is the weights' rounding.

Safety: the variant's commands (raw actions through the action spec: scale, offset, clip to the
limits, exactly what the robot receives) are compared with the fp32 student's on held-out
observations (rolled through both as one sequence, so a recurrent state's drift counts); a max
or mean abs error above the variant's bounds (`DEFAULT_PARITY_ATOL`, `DEFAULT_PARITY_MEAN_ATOL`)
raises `QuantizationParityError` and nothing is written. A passing file carries the fp32
file's metadata unchanged plus `provenance.quantization` (variant, bounds, measured errors,
source hash, calibration size), is re-loaded through `core.policy_file.OnnxPolicy` (the node's
loader) against the fp32 file's spec, and is renamed onto `dst` (same directory: atomic).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from policy_distill_ros.core.policy_file import OBS_INPUT, OnnxPolicy, read_metadata, save_policy

__all__ = ["VARIANTS", "DEFAULT_PARITY_ATOL", "DEFAULT_PARITY_MEAN_ATOL", "QuantParity",
           "QuantizationParityError", "quantize_policy", "variant_path", "rollout_parity"]

VARIANTS = ("int8", "int8_dynamic", "fp16")
# Bounds on the command error vs the fp32 student (max abs, mean abs), in command units (the
# demo robot's commands span [-1, 1]). They are a gate against a broken conversion, not a claim
# that the variants act alike: distilled students are high-gain (the demo student's raw outputs
# reach +-10 before the clip to +-1), so int8's rounding of its activations moves single
# commands by up to ~0.2; whether that matters is what the closed-loop return measures.
DEFAULT_PARITY_ATOL = {"int8": 0.3, "int8_dynamic": 0.3, "fp16": 0.05}
DEFAULT_PARITY_MEAN_ATOL = {"int8": 0.02, "int8_dynamic": 0.02, "fp16": 0.005}


class QuantizationParityError(RuntimeError):
    """The quantized graph strays beyond its bound from the fp32 student; nothing was written."""

    def __init__(self, message: str, parity: QuantParity) -> None:
        super().__init__(message)
        self.parity = parity


@dataclass
class QuantParity:
    """Quantized vs fp32 commands (after the action spec's postprocessing) on held-out
    observations; `raw_max_abs_error` is the raw network output's."""

    variant: str
    max_abs_error: float
    mean_abs_error: float
    p99_abs_error: float
    raw_max_abs_error: float
    samples: int
    atol: float
    mean_atol: float

    @property
    def passed(self) -> bool:
        return bool(np.isfinite(self.max_abs_error)) and self.max_abs_error <= self.atol \
            and self.mean_abs_error <= self.mean_atol

    def to_dict(self) -> dict:
        return dict(dataclasses.asdict(self), passed=self.passed)


def variant_path(src: str | os.PathLike, variant: str) -> Path:
    """`student.onnx` -> `student_int8.onnx` (next to the source)."""
    src = Path(src)
    return src.with_name(f"{src.stem}_{variant}{src.suffix}")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rollout_parity(reference: OnnxPolicy, candidate: OnnxPolicy, obs: np.ndarray,
                   variant: str, atol: float, mean_atol: float = float("inf")) -> QuantParity:
    """Both policies over `obs` rows as one sequence (each carrying its own recurrent state).

    The bound applies to the command the robot receives (the action spec's scale, offset and
    clip to the joint limits applied to both): a raw output beyond a limit is clipped on the
    robot whatever its precision. The raw output's error is reported too.
    """
    action = reference.spec.action
    reference.reset_state()
    candidate.reset_state()
    errors = np.empty((len(obs), reference.action_size), dtype=np.float64)
    raw_error = 0.0
    for i, row in enumerate(obs):
        a = reference(row).astype(np.float64)
        b = candidate(row).astype(np.float64)
        if not np.all(np.isfinite(b)):
            errors[i] = np.inf
            raw_error = float("inf")
            continue
        errors[i] = np.abs(action.postprocess(a) - action.postprocess(b))
        raw_error = max(raw_error, float(np.max(np.abs(a - b))))
    reference.reset_state()
    candidate.reset_state()
    flat = errors.reshape(-1)
    finite = np.all(np.isfinite(flat))
    return QuantParity(variant, float(flat.max()) if finite else float("inf"),
                       float(flat.mean()) if finite else float("inf"),
                       float(np.percentile(flat, 99)) if finite else float("inf"),
                       raw_error, int(len(obs)), float(atol), float(mean_atol))


class _Feeds:
    """ONNX Runtime's CalibrationDataReader over observation rows; a recurrent model's state
    inputs are the states the fp32 student actually had at each row."""

    def __init__(self, reference: OnnxPolicy, obs: np.ndarray) -> None:
        rows = []
        reference.reset_state()
        for row in obs:
            feed = {OBS_INPUT: row.reshape(1, -1).astype(np.float32)}
            feed.update(reference.state_feeds())
            rows.append(feed)
            reference(row)
        reference.reset_state()
        self._rows = iter(rows)

    def get_next(self):
        return next(self._rows, None)


def _gemm_as_matmul(model):
    """Rewrite Gemm (alpha = beta = 1, constant B) as MatMul + Add so that the dynamic quantizer,
    which knows MatMul only, sees every layer. Same arithmetic; returns a new model."""
    import onnx
    from onnx import helper, numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    inits = {t.name: t for t in out.graph.initializer}
    nodes = []
    for node in out.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type != "Gemm" or node.input[1] not in inits or attrs.get("transA", 0) \
                or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(inits[node.input[1]])
        if attrs.get("transB", 0):
            weight = weight.T
        name = node.name or node.output[0]
        wname = f"{node.input[1]}_matmul"
        out.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(weight), wname))
        if len(node.input) > 2 and node.input[2]:
            mid = f"{name}_matmul_out"
            nodes.append(helper.make_node("MatMul", [node.input[0], wname], [mid], f"{name}_mm"))
            nodes.append(helper.make_node("Add", [mid, node.input[2]], list(node.output),
                                          f"{name}_add"))
        else:
            nodes.append(helper.make_node("MatMul", [node.input[0], wname], list(node.output),
                                          f"{name}_mm"))
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    used = {i for n in out.graph.node for i in n.input}
    kept = [t for t in out.graph.initializer if t.name in used]
    del out.graph.initializer[:]
    out.graph.initializer.extend(kept)
    return out


def _float_first_layer(model) -> list[str]:
    """Names of the nodes kept in float32 for `float_first_layer`: the in-graph normalizer and
    the first weighted layer (Gemm / MatMul / Conv / GRU), the most sensitive part of a
    student: its inputs span a wide range (normalized, clipped at +-10 std), so one int8 scale
    for all of them costs more accuracy there than anywhere else."""
    keep = []
    for node in model.graph.node:
        keep.append(node.name)
        if node.op_type in ("Gemm", "MatMul", "Conv", "GRU", "LSTM"):
            return keep
    return []


@contextlib.contextmanager
def _quiet():
    """ONNX Runtime's quantizer prints calibration progress and logs a pre-processing hint on
    the root logger for every call; neither says anything about our graphs."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def _quantized_model(src: Path, variant: str, calibration: _Feeds | None, workdir: Path,
                     float_first_layer: bool):
    """The variant's onnx ModelProto (metadata not yet attached)."""
    with _quiet():
        return _convert(src, variant, calibration, workdir, float_first_layer)


def _convert(src: Path, variant: str, calibration: _Feeds | None, workdir: Path,
             float_first_layer: bool):
    import onnx

    if variant == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16
        return convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    out = workdir / f"{variant}.onnx"
    if variant == "int8":
        model = onnx.load(str(src))
        quantize_static(str(src), str(out), calibration, quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        per_channel=True, calibrate_method=CalibrationMethod.Percentile,
                        nodes_to_exclude=_float_first_layer(model) if float_first_layer else [],
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True,
                                       "CalibPercentile": 99.99})
    else:
        prepared = workdir / "matmul.onnx"
        model = _gemm_as_matmul(onnx.load(str(src)))
        onnx.save(model, str(prepared))
        quantize_dynamic(str(prepared), str(out), weight_type=QuantType.QInt8, per_channel=True,
                         nodes_to_exclude=_float_first_layer(model) if float_first_layer else [])
    return onnx.load(str(out))


def quantize_policy(src: str | os.PathLike, variant: str, calibration_obs: np.ndarray | None,
                    parity_obs: np.ndarray, dst: str | os.PathLike | None = None,
                    parity_atol: float | None = None, parity_mean_atol: float | None = None,
                    float_first_layer: bool = True) -> tuple[Path, QuantParity]:
    """Write `variant` of the fp32 policy file `src` to `dst` (default `variant_path`).

    `calibration_obs` [N, obs] (int8 only): the observations that set the activation ranges.
    `parity_obs` [M, obs]: held-out observations (never the calibration rows) on which the
    variant's commands must stay within `parity_atol` (max abs) and `parity_mean_atol` (mean
    abs) of `src`'s (defaults: `DEFAULT_PARITY_ATOL`, `DEFAULT_PARITY_MEAN_ATOL`). Returns
    (path, parity); raises
    QuantizationParityError (nothing written) when the bound is exceeded.
    `float_first_layer` (int8 only): keep the normalizer and the first layer in float32.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    src = Path(src)
    dst = Path(dst) if dst is not None else variant_path(src, variant)
    atol = DEFAULT_PARITY_ATOL[variant] if parity_atol is None else float(parity_atol)
    mean_atol = DEFAULT_PARITY_MEAN_ATOL[variant] if parity_mean_atol is None \
        else float(parity_mean_atol)
    if not (atol > 0 and mean_atol > 0):
        raise ValueError(f"parity bounds must be > 0, got {parity_atol!r}, {parity_mean_atol!r}")
    meta = read_metadata(src)
    reference = OnnxPolicy(src)
    size = reference.obs_size
    parity_obs = _rows(parity_obs, size, "parity_obs")
    calibration = None
    if variant == "int8":
        if calibration_obs is None:
            raise ValueError("int8 (static) quantization needs calibration observations")
        calibration_obs = _rows(calibration_obs, size, "calibration_obs")
        calibration = _Feeds(reference, calibration_obs)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".quantize_", dir=dst.parent) as tmp:
        workdir = Path(tmp)
        model = _quantized_model(src, variant, calibration, workdir, float_first_layer)
        staged = workdir / "staged.onnx"
        provenance = dict(meta.provenance)
        provenance["quantization"] = {
            "variant": variant, "source": src.name, "source_sha256": _sha256(src),
            "calibration_samples": int(len(calibration_obs)) if calibration is not None else 0,
            "float_first_layer": bool(float_first_layer and variant != "fp16"),
            "tool": _tool_version()}
        save_policy(model, dataclasses.replace(meta, provenance=provenance), staged)
        candidate = OnnxPolicy(staged, expected=meta.policy_spec)   # the node's loader
        parity = rollout_parity(reference, candidate, parity_obs, variant, atol, mean_atol)
        if not parity.passed:
            raise QuantizationParityError(
                f"{variant} of {src.name} blocked: command error vs fp32 max "
                f"{parity.max_abs_error:.3g} (bound {atol:g}), mean {parity.mean_abs_error:.3g} "
                f"(bound {mean_atol:g}) on {parity.samples} held-out observations", parity)
        provenance["quantization"]["parity"] = parity.to_dict()
        save_policy(model, dataclasses.replace(meta, provenance=provenance), staged)
        OnnxPolicy(staged, expected=meta.policy_spec)
        os.replace(staged, dst)   # same directory: atomic
    return dst, parity


def _rows(obs, size: int, what: str) -> np.ndarray:
    arr = np.asarray(obs, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[1] != size or len(arr) == 0:
        raise ValueError(f"{what} must be [N >= 1, {size}], got {list(arr.shape)}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} holds NaN or Inf")
    return arr


def _tool_version() -> str:
    import onnxruntime
    return f"onnxruntime {onnxruntime.__version__}"

