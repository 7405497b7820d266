"""Real, tiny ONNX policies for tests (built with onnx.helper, saved with core.save_policy).

`make_linear_policy`: actions = obs @ W + b (optionally tanh). `make_recurrent_policy`: a
minimal recurrent cell h' = tanh(obs @ Wx + h @ Wh + bh), actions = h' @ Wo + bo, with state
tensors `h_in`/`h_out`, so tests can check that state is carried between calls and reset.
Both return their weights so a test can compute the expected output with numpy.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from policy_distill_ros.core.policy_file import PolicyMetadata, RecurrentState, save_policy
from policy_distill_ros.core.spec import PolicySpec, load_policy_spec

OPSET = 17
IR_VERSION = 9  # accepted by every onnxruntime this project supports


def _model(nodes, inputs, outputs, initializers) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "policy", inputs, outputs, initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="policy_distill_ros.test")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def _f32(name: str, array: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name)


def _as_spec(spec: PolicySpec | Mapping[str, Any] | str | Path) -> PolicySpec:
    return spec if isinstance(spec, PolicySpec) else load_policy_spec(spec)


def make_linear_policy(
    path: str | Path,
    spec: PolicySpec | Mapping[str, Any],
    weight: Any = None,
    bias: Any = None,
    *,
    tanh: bool = False,
    provenance: Mapping[str, Any] | None = None,
    obs_size: int | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Write obs[1,N] -> actions[1,M] = obs @ W + b (tanh optional) with `spec` as metadata.

    `obs_size` overrides the graph's input width (to build a deliberately inconsistent file).
    `spec` may also be a spec dict or YAML path. Returns (W [N, M], b [M]) as float32.
    """
    spec = _as_spec(spec)
    n = spec.observation.size if obs_size is None else obs_size
    m = spec.action.size
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((n, m)) * 0.1 if weight is None else np.asarray(weight)
         ).astype(np.float32)
    b = (rng.standard_normal(m) * 0.1 if bias is None else np.asarray(bias)).astype(np.float32)
    if w.shape != (n, m) or b.shape != (m,):
        raise ValueError(f"weight must be ({n}, {m}) and bias ({m},); got {w.shape}, {b.shape}")
    nodes = [helper.make_node("MatMul", ["obs", "W"], ["xw"]),
             helper.make_node("Add", ["xw", "b"], ["pre" if tanh else "actions"])]
    if tanh:
        nodes.append(helper.make_node("Tanh", ["pre"], ["actions"]))
    model = _model(nodes,
                   [helper.make_tensor_value_info("obs", TensorProto.FLOAT, [1, n])],
                   [helper.make_tensor_value_info("actions", TensorProto.FLOAT, [1, m])],
                   [_f32("W", w), _f32("b", b)])
    meta = PolicyMetadata.from_spec(spec, provenance=provenance or {"maker": "test"})
    if obs_size is not None and obs_size != spec.observation.size:
        _save_unchecked(model, meta, path)
    else:
        save_policy(model, meta, path)
    return w, b


def _save_unchecked(model: onnx.ModelProto, meta: PolicyMetadata, path: str | Path) -> None:
    """Write metadata without save_policy's consistency check (for negative tests)."""
    for key, value in meta.to_props().items():
        model.metadata_props.add(key=key, value=value)
    Path(path).write_bytes(model.SerializeToString())


def make_recurrent_policy(
    path: str | Path, spec: PolicySpec | Mapping[str, Any], hidden_size: int = 4, *, seed: int = 0
) -> dict[str, np.ndarray]:
    """Write a recurrent policy with state `h_in`/`h_out` of shape [1, hidden_size].

    Returns the weights {"Wx", "Wh", "bh", "Wo", "bo"} (float32).
    """
    spec = _as_spec(spec)
    n, m, h = spec.observation.size, spec.action.size, hidden_size
    rng = np.random.default_rng(seed)
    weights = {"Wx": rng.standard_normal((n, h)) * 0.3, "Wh": rng.standard_normal((h, h)) * 0.5,
               "bh": rng.standard_normal(h) * 0.1, "Wo": rng.standard_normal((h, m)) * 0.5,
               "bo": rng.standard_normal(m) * 0.1}
    weights = {k: v.astype(np.float32) for k, v in weights.items()}
    nodes = [helper.make_node("MatMul", ["obs", "Wx"], ["xw"]),
             helper.make_node("MatMul", ["h_in", "Wh"], ["hw"]),
             helper.make_node("Add", ["xw", "hw"], ["s1"]),
             helper.make_node("Add", ["s1", "bh"], ["s2"]),
             helper.make_node("Tanh", ["s2"], ["h_out"]),
             helper.make_node("MatMul", ["h_out", "Wo"], ["hw_o"]),
             helper.make_node("Add", ["hw_o", "bo"], ["actions"])]
    model = _model(nodes,
                   [helper.make_tensor_value_info("obs", TensorProto.FLOAT, [1, n]),
                    helper.make_tensor_value_info("h_in", TensorProto.FLOAT, [1, h])],
                   [helper.make_tensor_value_info("actions", TensorProto.FLOAT, [1, m]),
                    helper.make_tensor_value_info("h_out", TensorProto.FLOAT, [1, h])],
                   [_f32(k, v) for k, v in weights.items()])
    meta = PolicyMetadata.from_spec(
        spec, recurrent_state=[RecurrentState("h_in", "h_out", (1, h))],
        provenance={"maker": "test", "kind": "recurrent"})
    save_policy(model, meta, path)
    return weights


def recurrent_reference(weights: Mapping[str, np.ndarray], obs_seq: np.ndarray) -> np.ndarray:
    """Numpy actions for a sequence of observations, starting from a zero state."""
    h = np.zeros((1, weights["Wh"].shape[0]), dtype=np.float32)
    out = []
    for obs in obs_seq:
        h = np.tanh(obs[None, :] @ weights["Wx"] + h @ weights["Wh"] + weights["bh"])
        out.append((h @ weights["Wo"] + weights["bo"])[0])
    return np.asarray(out, dtype=np.float32)
