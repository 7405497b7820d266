"""Memory of the student node (ONNX Runtime) vs a node that loads torch, under a 500 Hz stream.

    .venv/bin/python bench/student_memory.py [--duration-s 60] [--rate-hz 500]
        [--model student.onnx ...] [--cases student,baseline]

Each case runs alone next to the sensor publisher and the echo probe of bench/student_latency.py
(12-joint JointState + Imu at --rate-hz): the student node (`trigger: on_message`, the policy
file of that benchmark, MLP 138-256-128-12, or each `--model` given, e.g. an int8 variant for the
same robot spec) and the baseline (bench/baseline_node.py: plain rclpy, torch MLP of the same
size). From /proc/<pid>/status, once a second: resident memory (VmRSS) once the node acts
(model loaded, warm), after --duration-s of acting, and the peak (VmHWM); the actions the probe
heard tell that the node really ran at the rate.

`--arena`: ONNX Runtime's own arena, in fresh processes: RSS after `import onnxruntime`, after
the session is created and after 1000 runs, with the CPU memory arena on (the default, what the
node uses) and off; the difference after the runs is what the arena holds.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from policy_distill_ros.core.memory import process_memory_mib
from student_latency import HIDDEN, LEGS, bench_env, make_model, start, stop

STARTUP_TIMEOUT_S = 60.0


def run_case(name: str, node_args: list, env: dict, duration_s: float, workdir: str) -> dict:
    out = os.path.join(workdir, f"{name}.npy")
    probe = start([sys.executable, str(REPO / "bench/student_latency.py"), "--role", "probe",
                   "--out", out], env, os.path.join(workdir, f"{name}_probe.log"))
    node = start(node_args, env, os.path.join(workdir, f"{name}_node.log"))
    first = out + ".first"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not os.path.exists(first) and time.monotonic() < deadline and node.poll() is None:
        time.sleep(0.1)
    acting = os.path.exists(first)
    time.sleep(2.0)   # warm: first inferences, DDS discovery settled
    loaded = process_memory_mib(node.pid)
    samples = [loaded]
    end = time.monotonic() + duration_s
    while acting and time.monotonic() < end and node.poll() is None:
        time.sleep(1.0)
        samples.append(process_memory_mib(node.pid))
    final = process_memory_mib(node.pid)
    stop(node)
    stop(probe)
    import numpy as np
    rows = np.load(out) if os.path.exists(out) else np.zeros((0, 3))
    for path in (out, first):
        if os.path.exists(path):
            os.unlink(path)
    window = rows[rows[:, 0] >= rows[-1, 0] - duration_s * 1e9] if len(rows) else rows
    if not acting or not final:
        return {"case": name, "error": f"node did not act (log: {workdir}/{name}_node.log)"}
    rss = [s["rss_mib"] for s in samples if s]
    return {"case": name, "rss_loaded_mib": loaded["rss_mib"],
            "rss_end_mib": final["rss_mib"], "rss_max_sampled_mib": max(rss),
            "peak_hwm_mib": final["peak_mib"],
            "growth_mib": final["rss_mib"] - loaded["rss_mib"],
            "actions": int(len(rows)),
            "action_rate_hz": float(len(window) / duration_s) if len(window) else 0.0,
            "seconds": duration_s}


ARENA_SCRIPT = r"""
import json, sys, numpy as np
from policy_distill_ros.core.memory import process_memory_mib
def rss():
    return process_memory_mib()['rss_mib']
base = rss()
import onnxruntime as ort
from policy_distill_ros.core.policy_file import make_session_options
imported = rss()
opts = make_session_options()
opts.enable_cpu_mem_arena = sys.argv[2] == 'on'
s = ort.InferenceSession(sys.argv[1], sess_options=opts, providers=['CPUExecutionProvider'])
created = rss()
feeds = {i.name: np.zeros([d if isinstance(d, int) else 1 for d in i.shape], np.float32)
         for i in s.get_inputs()}
for _ in range(1000):
    s.run(None, feeds)
ran = rss()
print(json.dumps({'python': base, 'import_ort': imported - base,
                  'session': created - imported, 'runs': ran - created, 'total': ran}))
"""


def arena(model: str, env: dict) -> dict:
    out = {}
    for mode in ("on", "off"):
        figures = []
        for _ in range(3):   # fresh process each time; RSS steps are page-granular
            res = subprocess.run([sys.executable, "-c", ARENA_SCRIPT, model, mode], env=env,
                                 capture_output=True, text=True, cwd=str(REPO), check=True)
            figures.append(json.loads(res.stdout.strip().splitlines()[-1]))
        out[mode] = {k: float(sorted(f[k] for f in figures)[1]) for k in figures[0]}
    out["arena_mib"] = (out["on"]["session"] + out["on"]["runs"]) - \
        (out["off"]["session"] + out["off"]["runs"])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=60.0)
    parser.add_argument("--rate-hz", type=float, default=500.0)
    parser.add_argument("--cases", default="student,baseline")
    parser.add_argument("--model", action="append", default=[],
                        help="extra student policy files for config/robot_example.yaml's robot")
    parser.add_argument("--quantized", action="store_true",
                        help="also the int8 (dynamic, all layers) and fp16 variants of the "
                             "benchmark's student (training.quantize)")
    parser.add_argument("--arena", action="store_true", help="also ONNX Runtime's arena use")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="student_memory_")
    env = bench_env()
    model = os.path.join(workdir, "student.onnx")
    make_model(model, args.rate_hz)
    student = [sys.executable, "-m", "policy_distill_ros.nodes.student_node", "--ros-args",
               "-p", f"rate_hz:={args.rate_hz}", "-p", "max_input_age_s:=0.05",
               "-p", "trigger:=on_message", "-p", "trigger_topic:=joint_states"]
    cases = {"student": student + ["-p", f"model_path:={model}"],
             "baseline": [sys.executable, str(REPO / "bench/baseline_node.py"), "--ros-args",
                          "-p", f"joints:={','.join(LEGS)}",
                          "-p", f"hidden:={','.join(map(str, HIDDEN))}"]}
    wanted = [c.strip() for c in args.cases.split(",") if c.strip()]
    if args.quantized:
        import numpy as np

        from policy_distill_ros.training.quantize import quantize_policy
        rows = np.random.default_rng(0).standard_normal((400, 138)).astype(np.float32)
        for variant in ("int8_dynamic", "fp16"):
            path, _ = quantize_policy(model, variant, None, rows, float_first_layer=False)
            args.model.append(str(path))
    for extra in args.model:
        name = f"student:{Path(extra).name}"
        cases[name] = student + ["-p", f"model_path:={Path(extra).resolve()}"]
        wanted.append(name)
    sensors = start([sys.executable, str(REPO / "bench/student_latency.py"), "--role", "sensors",
                     "--rate-hz", str(args.rate_hz)], env, os.path.join(workdir, "sensors.log"))
    results = []
    try:
        for name in wanted:
            print(f"{name}: {args.duration_s:.0f} s at {args.rate_hz:.0f} Hz ...", flush=True)
            results.append(run_case(name, cases[name], env, args.duration_s, workdir))
    finally:
        stop(sensors)
    print(f"\n{'case':<34}{'RSS loaded':>11}{'RSS end':>9}{'peak':>8}{'growth':>8}"
          f"{'actions/s':>10}   (MiB; {os.getloadavg()[0]:.1f} load, {os.cpu_count()} cores)")
    for r in results:
        if "error" in r:
            print(f"{r['case']:<34}{r['error']}")
            continue
        print(f"{r['case']:<34}{r['rss_loaded_mib']:>11.1f}{r['rss_end_mib']:>9.1f}"
              f"{r['peak_hwm_mib']:>8.1f}{r['growth_mib']:>8.1f}{r['action_rate_hz']:>10.0f}")
    ok = {r["case"]: r for r in results if "error" not in r}
    if "student" in ok and "baseline" in ok:
        base, student = ok["baseline"], ok["student"]
        print(f"baseline / student: RSS {base['rss_end_mib'] / student['rss_end_mib']:.2f}x, "
              f"peak {base['peak_hwm_mib'] / student['peak_hwm_mib']:.2f}x")
    report = {"cases": results, "duration_s": args.duration_s, "rate_hz": args.rate_hz}
    if args.arena:
        report["arena"] = {}
        for path in [model] + args.model:
            a = arena(str(Path(path).resolve()), env)
            report["arena"][Path(path).name] = a
            print(f"ONNX Runtime arena, {Path(path).name}: session + 1000 runs "
                  f"{a['on']['session'] + a['on']['runs']:.2f} MiB with the arena, "
                  f"{a['off']['session'] + a['off']['runs']:.2f} MiB without: arena "
                  f"{a['arena_mib']:.2f} MiB (import onnxruntime {a['on']['import_ort']:.1f} MiB, "
                  f"median of 3 processes)")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
