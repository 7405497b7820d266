"""A small random MLP policy file for a spec, built with numpy + onnx only (no torch).

For trying the robot side before a student is trained (`policy-distill deploy` without a model)
and for benchmarks: a real, self-describing policy file of the right shapes for the spec, so
the node, the monitor and the latency figures are those of a real deployment. Its provenance
says that the weights are random; its actions are not meant to move a robot anywhere useful.
"""
from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path

import numpy as np

from .policy_file import ACTIONS_OUTPUT, OBS_INPUT, PolicyMetadata, save_policy
from .spec import PolicySpec

__all__ = ["make_demo_policy", "DEMO_OPSET"]

DEMO_OPSET = 17
_IR_VERSION = 9  # readable by every onnxruntime the robot requirements allow


def make_demo_policy(path: str | Path, spec: PolicySpec, hidden_sizes: Sequence[int] = (64, 64),
                     seed: int = 0, output_gain: float = 0.5) -> Path:
    """Write obs -> tanh MLP -> output_gain * tanh(.) actions for `spec`, metadata attached.

    Weights are Gaussian with 1/sqrt(fan_in) scale, so actions stay well inside [-gain, gain].
    Returns the path (written atomically by `save_policy`).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if not all(isinstance(h, int) and h > 0 for h in hidden_sizes):
        raise ValueError(f"hidden_sizes must be positive integers, got {list(hidden_sizes)}")
    if not 0.0 < output_gain:
        raise ValueError(f"output_gain must be > 0, got {output_gain}")
    rng = np.random.default_rng(seed)
    widths = [spec.observation.size, *hidden_sizes, spec.action.size]
    nodes, weights, current = [], [], OBS_INPUT
    for i, (fan_in, fan_out) in enumerate(pairwise(widths)):
        w = rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)
        weights += [numpy_helper.from_array(w.astype(np.float32), f"w{i}"),
                    numpy_helper.from_array(np.zeros(fan_out, np.float32), f"b{i}")]
        nodes += [helper.make_node("MatMul", [current, f"w{i}"], [f"mm{i}"]),
                  helper.make_node("Add", [f"mm{i}", f"b{i}"], [f"pre{i}"]),
                  helper.make_node("Tanh", [f"pre{i}"], [f"act{i}"])]
        current = f"act{i}"
    weights.append(numpy_helper.from_array(np.array(output_gain, np.float32), "gain"))
    nodes.append(helper.make_node("Mul", [current, "gain"], [ACTIONS_OUTPUT]))
    graph = helper.make_graph(
        nodes, "demo_policy",
        [helper.make_tensor_value_info(OBS_INPUT, TensorProto.FLOAT, [1, widths[0]])],
        [helper.make_tensor_value_info(ACTIONS_OUTPUT, TensorProto.FLOAT, [1, widths[-1]])],
        initializer=weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", DEMO_OPSET)],
                              producer_name="policy_distill_ros.demo_policy")
    model.ir_version = _IR_VERSION
    onnx.checker.check_model(model)
    meta = PolicyMetadata.from_spec(spec, provenance={
        "kind": "demo", "weights": "random (not trained)", "seed": seed,
        "hidden_sizes": list(hidden_sizes)})
    path = Path(path)
    save_policy(model, meta, path)
    return path
