"""Time OnnxPolicy inference (1 intra-op thread, no spinning) and the alternatives it could use.

Run: .venv/bin/python bench/core_policy.py [--iterations N] [--hidden 128,128]
Builds an MLP of the robot example's size (obs 138 -> hidden -> 12, ELU) with onnx.helper, saves
it with core.save_policy, and prints p50/p99 microseconds for: OnnxPolicy.__call__,
OnnxPolicy.act() (what the node uses: OrtValues over its own arrays, bound once), bare
session.run, IO binding of a numpy input and a raw output pointer, run_with_ort_values.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from policy_distill_ros.core.policy_file import OnnxPolicy, PolicyMetadata, save_policy
from policy_distill_ros.core.spec import load_policy_spec

REPO = Path(__file__).resolve().parents[1]


def mlp(obs_size: int, hidden: list[int], action_size: int) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    nodes, inits, x, width = [], [], "obs", obs_size
    for i, h in enumerate(hidden + [action_size]):
        w = (rng.standard_normal((width, h)) / np.sqrt(width)).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"W{i}"),
                  numpy_helper.from_array(np.zeros(h, np.float32), f"b{i}")]
        last = i == len(hidden)
        out = "actions" if last else f"h{i}"
        nodes += [helper.make_node("Gemm", [x, f"W{i}", f"b{i}"], [out if last else f"g{i}"])]
        if not last:
            nodes.append(helper.make_node("Elu", [f"g{i}"], [out]))
        x, width = out, h
    graph = helper.make_graph(nodes, "mlp",
                              [helper.make_tensor_value_info("obs", TensorProto.FLOAT,
                                                             [1, obs_size])],
                              [helper.make_tensor_value_info("actions", TensorProto.FLOAT,
                                                             [1, action_size])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def timed(fn, n: int) -> np.ndarray:
    out = np.empty(n)
    clock = time.perf_counter_ns
    for i in range(n):
        t0 = clock()
        fn()
        out[i] = clock() - t0
    return out / 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=20000)
    parser.add_argument("--hidden", default="128,128")
    args = parser.parse_args()
    hidden = [int(h) for h in args.hidden.split(",") if h]
    spec = load_policy_spec(REPO / "config" / "robot_example.yaml")
    n_obs, n_act = spec.observation.size, spec.action.size
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mlp.onnx"
        save_policy(mlp(n_obs, hidden, n_act), PolicyMetadata.from_spec(spec), path)
        policy = OnnxPolicy(path, expected=spec)
        session = policy._session  # the same tuned session, driven three other ways
        obs = np.random.default_rng(1).standard_normal(n_obs).astype(np.float32)
        obs2d = obs[None, :].copy()
        feeds = {"obs": obs2d}
        binding = session.io_binding()
        out = np.empty((1, n_act), np.float32)
        binding.bind_cpu_input("obs", obs2d)
        binding.bind_output("actions", "cpu", 0, np.float32, out.shape, out.ctypes.data)
        ort_obs = ort.OrtValue.ortvalue_from_numpy(obs2d)
        ort_feeds = {"obs": ort_obs}
        ro = ort.RunOptions()
        reference = policy(obs)

        def run_binding():
            session.run_with_iobinding(binding, ro)

        policy.obs_row[:] = obs
        cases = {
            "OnnxPolicy(obs)": lambda: policy(obs),
            "OnnxPolicy.act() (the node's path)": policy.act,
            "session.run(['actions'], feeds)": lambda: session.run(["actions"], feeds),
            "run_with_iobinding (preallocated output)": run_binding,
            "run_with_ort_values": lambda: session.run_with_ort_values(["actions"], ort_feeds),
        }
        for fn in cases.values():  # warm-up
            for _ in range(500):
                fn()
        results = {name: timed(fn, args.iterations) for name, fn in cases.items()}
        run_binding()
        assert np.allclose(out[0], reference, atol=1e-6)
    print(f"policy inference, MLP {n_obs}-{'-'.join(map(str, hidden))}-{n_act}, 1 thread, "
          f"{args.iterations} calls each (microseconds)")
    for name, us in results.items():
        print(f"  {name:45s} p50 {np.percentile(us, 50):6.1f}  p99 {np.percentile(us, 99):6.1f}")


if __name__ == "__main__":
    main()
