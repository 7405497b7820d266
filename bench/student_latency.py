"""Sensor-message-to-action latency: student node (ONNX Runtime) vs a plain rclpy + torch node.

    .venv/bin/python bench/student_latency.py [--duration-s 20] [--rate-hz 500] [--repeat 3]
        [--cases echo,on_message,on_message_rt,timer,baseline]
    .venv/bin/python bench/student_latency.py --stages 5000    # in-process, where time goes

Processes, same machine, same run, one policy node at a time: a sensor publisher (JointState for
12 joints in shuffled order + Imu at --rate-hz, stamped with the wall clock just before
publishing), the policy node, and a probe that records `receive time - echo.header.stamp` for
every `policy_action` echo. Both policies: the 12-joint quadruped spec of
config/robot_example.yaml (obs 138 = 46 x history 3), MLP 138-256-128-12; the student runs it
in ONNX Runtime on one thread, the baseline in torch with its default threads.

What "latency" means per configuration (honestly different):
  echo                the floor: a Python node that republishes each joint_states message as
                      the echo (serialized bytes in, same bytes out, no compute); what DDS, the
                      scheduler, Python wake-ups and the probe cost before any policy work
  student on_message  inference in the joint_states callback: message in -> action out
  on_message_rt       the same with `realtime_priority:=50` (SCHED_FIFO for the student process,
                      what a robot deployment would use; needs root/CAP_SYS_NICE)
  student timer       fixed-rate loop thread: adds a sampling delay of 0..1 period on top
  baseline            inference in the joint_states callback, torch, default executor
Deadline misses: echo gaps longer than 2 control periods (an action that never came).
`--rt-infra`: the sensor publisher, the probe and the echo node run under SCHED_FIFO, so on a
loaded machine the measuring side is not what gets starved; the nodes under test keep normal
scheduling (except on_message_rt).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

LEGS = [f"{leg}_{part}_joint" for leg in ("FL", "FR", "RL", "RR")
        for part in ("hip", "thigh", "calf")]
HIDDEN = (256, 128)


# ---- roles run as child processes ------------------------------------------------------------
def run_sensors(rate_hz: float) -> None:
    """Absolute-time publishing thread so the input stream itself is steady."""
    import rclpy
    from sensor_msgs.msg import Imu, JointState

    from policy_distill_ros.nodes.ros_common import SENSOR_QOS
    rclpy.init()
    node = rclpy.create_node("bench_sensors")
    joints_pub = node.create_publisher(JointState, "joint_states", SENSOR_QOS)
    imu_pub = node.create_publisher(Imu, "imu", SENSOR_QOS)
    order = list(reversed(LEGS))  # not the spec's order: the node resolves joints by name
    rng = np.random.default_rng(0)
    joints = JointState(name=order)
    imu = Imu()
    period_s = 1.0 / rate_hz
    next_s = time.monotonic()
    try:
        while rclpy.ok():
            next_s += period_s
            delay = next_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            joints.position = (0.1 * rng.standard_normal(12)).tolist()
            joints.velocity = rng.standard_normal(12).tolist()
            imu.angular_velocity.x, imu.angular_velocity.y, imu.angular_velocity.z = \
                (float(v) for v in 0.1 * rng.standard_normal(3))
            imu.orientation.w = 1.0
            stamp = node.get_clock().now().to_msg()
            imu.header.stamp = stamp
            joints.header.stamp = stamp
            imu_pub.publish(imu)        # the imu first: the joint_states trigger then sees it
            joints_pub.publish(joints)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


def _serve(node, subscriptions, name: str) -> None:
    """Serve raw subscriptions on a TakeLoop thread until SIGINT."""
    import rclpy

    from policy_distill_ros.nodes.rclpy_internals import TakeLoop
    loop = TakeLoop(node, subscriptions, name).start()
    try:
        while rclpy.ok():
            time.sleep(0.1)
    except KeyboardInterrupt:
        pass
    finally:
        loop.close()


def run_probe(out_path: str) -> None:
    """Records (receive_ns, stamp_ns, fallback) of every echo until SIGINT, then writes them.

    Kept as lean as the student's own input path (wait-set thread, serialized take, the stamp
    read straight from the CDR bytes), so the probe adds as little as possible to what it
    measures; its cost is in every case alike, and the `echo` case shows the total floor.
    """
    import struct

    import rclpy
    from sensor_msgs.msg import JointState

    from policy_distill_ros.nodes.ros_common import COMMAND_QOS
    rclpy.init()
    node = rclpy.create_node("bench_probe")
    rows = np.zeros((1_000_000, 3), dtype=np.int64)
    count = [0]
    fallback = b"fallback\0"

    def on_echo(raw: bytes) -> None:  # CDR: 4-byte header, stamp sec/nanosec, frame_id
        now_ns = time.time_ns()
        sec, nanosec, frame_len = struct.unpack_from("<iII", raw, 4)
        i = count[0]
        if i == 0:
            open(out_path + ".first", "w").close()  # tells the orchestrator the node is up
        if i < len(rows):
            rows[i] = (now_ns, sec * 1_000_000_000 + nanosec, raw[16:16 + frame_len] == fallback)
            count[0] = i + 1

    subscription = node.create_subscription(JointState, "policy_action", on_echo, COMMAND_QOS,
                                            raw=True)
    try:
        _serve(node, [subscription], "probe")
    finally:
        np.save(out_path, rows[:count[0]])
        node.destroy_node()
        rclpy.try_shutdown()


def run_echo() -> None:
    """The floor: each joint_states message goes back out, unchanged, as the echo."""
    import rclpy
    from sensor_msgs.msg import JointState

    from policy_distill_ros.nodes.ros_common import COMMAND_QOS, SENSOR_QOS
    rclpy.init()
    node = rclpy.create_node("bench_echo")
    publisher = node.create_publisher(JointState, "policy_action", COMMAND_QOS)
    subscription = node.create_subscription(JointState, "joint_states", publisher.publish,
                                            SENSOR_QOS, raw=True)
    try:
        _serve(node, [subscription], "echo")
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


# ---- orchestration ---------------------------------------------------------------------------
def start(args: list, env: dict, log_path: str) -> subprocess.Popen:
    with open(log_path, "w") as log:
        return subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT,
                                cwd=str(REPO))


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def make_model(path: str, rate_hz: float) -> None:
    """The student: a random MLP of the benchmark size with the robot spec in its metadata."""
    import onnx
    import torch

    from policy_distill_ros.core.policy_file import PolicyMetadata
    from policy_distill_ros.core.spec import load_policy_spec
    from policy_distill_ros.training.export import attach_metadata
    spec = load_policy_spec(str(REPO / "config" / "robot_example.yaml"))
    layers, width = [], spec.observation.size
    for h in HIDDEN:
        layers += [torch.nn.Linear(width, h), torch.nn.ELU()]
        width = h
    net = torch.nn.Sequential(*layers, torch.nn.Linear(width, spec.action.size)).eval()
    onnx_path = path + ".raw"
    torch.onnx.export(net, torch.zeros(1, spec.observation.size), onnx_path,
                      input_names=["obs"], output_names=["actions"], dynamo=False)
    meta = PolicyMetadata(observation_spec=spec.observation, action_spec=spec.action,
                          rate_hz=rate_hz)
    onnx.save(attach_metadata(onnx.load(onnx_path), meta), path)
    os.unlink(onnx_path)


def summarize(runs: list, rate_hz: float, warmup_s: float) -> dict:
    """Pooled figures of one case over its runs (each run's warm-up dropped, gaps per run)."""
    runs = [r[r[:, 0] > r[0, 0] + warmup_s * 1e9] for r in runs if len(r)]
    runs = [r for r in runs if len(r) > 1]
    if not runs:
        return {"actions": 0}
    rows = np.concatenate(runs)
    latency_ms = (rows[:, 0] - rows[:, 1]) / 1e6
    gaps_ms = np.concatenate([np.diff(r[:, 0]) for r in runs]) / 1e6
    period_ms = 1e3 / rate_hz
    return {"actions": int(len(rows)), "runs": len(runs), "fallbacks": int(rows[:, 2].sum()),
            "p50_ms": float(np.percentile(latency_ms, 50)),
            "p99_ms": float(np.percentile(latency_ms, 99)),
            "max_ms": float(latency_ms.max()),
            "rate_hz": float(1e3 / gaps_ms.mean()),
            "jitter_ms": float(gaps_ms.std()),
            "misses": int((gaps_ms > 2 * period_ms).sum())}


def run_stages(model: str, rate_hz: float, iterations: int) -> None:
    """Where the time goes, without DDS or other processes: the student's message handler and
    its stages, and the baseline's callback, called directly with the same messages."""
    import collections

    import rclpy
    from sensor_msgs.msg import Imu, JointState

    from policy_distill_ros.core import observation, policy_file, spec
    from policy_distill_ros.nodes import action_publisher, student_node
    times = collections.defaultdict(list)

    def timed(cls, name: str, label: str) -> None:
        inner = getattr(cls, name)

        def wrapper(*args, **kwargs):
            t0 = time.perf_counter_ns()
            try:
                return inner(*args, **kwargs)
            finally:
                times[label].append(time.perf_counter_ns() - t0)
        setattr(cls, name, wrapper)

    for cls, name, label in (
            (observation.ObservationAssembler, "on_message", "  assemble one message (core)"),
            (observation.ObservationAssembler, "build", "  build history vector (core)"),
            (policy_file.OnnxPolicy, "__call__", "  onnxruntime inference (core)"),
            (spec.ActionSpec, "postprocess", "  postprocess action (core)"),
            (action_publisher.ActionPublisher, "publish", "  publish command + echo")):
        timed(cls, name, label)
    rclpy.init(args=["--ros-args", "--log-level", "fatal", "-p", f"model_path:={model}",
                     "-p", f"rate_hz:={rate_hz}", "-p", "trigger:=on_message",
                     "-p", "trigger_topic:=joint_states", "-p", "max_input_age_s:=10.0"])
    node = student_node.StudentNode()
    joints = JointState(name=list(reversed(LEGS)), position=[0.1] * 12, velocity=[0.2] * 12)
    imu = Imu()
    imu.orientation.w = 1.0

    def stamp(msg) -> None:
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(time.time_ns(), 1_000_000_000)

    for _ in range(iterations):
        stamp(imu)
        stamp(joints)
        t0 = time.perf_counter_ns()
        node._on_input("imu", imu)
        t1 = time.perf_counter_ns()
        node._on_input("joint_states", joints)
        t2 = time.perf_counter_ns()
        times["student: imu message handled"].append(t1 - t0)
        times["student: joint_states in -> action out"].append(t2 - t1)
    ticks = node.ticks
    node.destroy_node()
    rclpy.try_shutdown()
    from baseline_node import BaselineNode  # torch, only for the comparison
    rclpy.init(args=["--ros-args", "-p", f"joints:={','.join(LEGS)}",
                     "-p", f"hidden:={','.join(map(str, HIDDEN))}"])
    base = BaselineNode()
    for _ in range(iterations):
        t0 = time.perf_counter_ns()
        base.on_imu(imu)
        base.on_joints(joints)
        times["baseline: imu + joint_states callbacks"].append(time.perf_counter_ns() - t0)
    base.destroy_node()
    rclpy.try_shutdown()
    print(f"\nin-process stage costs, {iterations} iterations ({ticks} student ticks), us:")
    print(f"{'stage':<42}{'p50':>8}{'p99':>8}{'max':>9}")
    order = ["student: imu message handled", "student: joint_states in -> action out"] + \
        [k for k in times if k.startswith("  ")] + ["baseline: imu + joint_states callbacks"]
    for label in order:
        us = np.array(times[label][iterations // 10:]) / 1e3
        print(f"{label:<42}{np.percentile(us, 50):>8.1f}{np.percentile(us, 99):>8.1f}"
              f"{us.max():>9.1f}")


WARMUP_S = 3.0  # after the first echo: discovery settling, dropped from every run
STARTUP_TIMEOUT_S = 60.0


def run_case(name: str, node_args: list, env: dict, duration_s: float, workdir: str,
             infra: list) -> np.ndarray:
    """One run of one case: the probe's rows (receive_ns, stamp_ns, fallback)."""
    out = os.path.join(workdir, f"{name}.npy")
    probe = start([sys.executable, __file__, "--role", "probe", "--out", out] + infra, env,
                  os.path.join(workdir, f"{name}_probe.log"))
    node = start(node_args, env, os.path.join(workdir, f"{name}_node.log"))
    first = out + ".first"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S  # torch's import alone can take seconds
    while not os.path.exists(first) and time.monotonic() < deadline and node.poll() is None:
        time.sleep(0.1)
    time.sleep(WARMUP_S)
    cpu_start_s = cpu_time_s(node.pid)
    time.sleep(duration_s)
    cpu_s = cpu_time_s(node.pid) - cpu_start_s
    stop(node)
    stop(probe)
    rows = np.load(out)
    os.unlink(out)
    if os.path.exists(first):
        os.unlink(first)
    return rows, cpu_s / duration_s


def bench_env() -> dict:
    """Environment of the benchmark's child processes: this checkout first on the path, a DDS
    domain of its own, localhost discovery only."""
    return dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                ROS_DOMAIN_ID=os.environ.get("ROS_DOMAIN_ID", str(101 + os.getpid() % 100)),
                ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")


def cpu_time_s(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads (Linux /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=("main", "sensors", "probe", "echo"), default="main")
    parser.add_argument("--out", default="")
    parser.add_argument("--duration-s", type=float, default=20.0)
    parser.add_argument("--rate-hz", type=float, default=500.0)
    parser.add_argument("--cases", default="echo,on_message,timer,baseline")
    parser.add_argument("--rt-infra", action="store_true",
                        help="SCHED_FIFO for the sensor publisher, the probe and the echo node")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run the case list this many times, interleaved (a shared "
                             "machine's load changes over minutes); figures pool the runs")
    parser.add_argument("--stages", type=int, default=0, metavar="N",
                        help="instead: N in-process iterations, per-stage costs (no DDS)")
    args = parser.parse_args()
    if args.rt_infra and args.role != "main":
        from policy_distill_ros.core.realtime import set_realtime_priority
        problem = set_realtime_priority(60)
        if problem:
            print(problem, file=sys.stderr)
    if args.role == "sensors":
        return run_sensors(args.rate_hz)
    if args.role == "probe":
        return run_probe(args.out)
    if args.role == "echo":
        return run_echo()

    workdir = tempfile.mkdtemp(prefix="student_latency_")
    env = bench_env()
    model = os.path.join(workdir, "student.onnx")
    make_model(model, args.rate_hz)
    if args.stages:
        sys.path.insert(0, str(REPO / "bench"))
        os.environ.update(ROS_DOMAIN_ID=env["ROS_DOMAIN_ID"],  # nobody else hears us
                          ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
        return run_stages(model, args.rate_hz, args.stages)
    student = [sys.executable, "-m", "policy_distill_ros.nodes.student_node", "--ros-args",
               "-p", f"model_path:={model}", "-p", f"rate_hz:={args.rate_hz}",
               "-p", "max_input_age_s:=0.05"]
    infra = ["--rt-infra"] if args.rt_infra else []
    cases = {
        "echo": [sys.executable, __file__, "--role", "echo"] + infra,
        "on_message": student + ["-p", "trigger:=on_message", "-p", "trigger_topic:=joint_states"],
        "on_message_rt": student + ["-p", "trigger:=on_message", "-p",
                                    "trigger_topic:=joint_states", "-p", "realtime_priority:=50"],
        "timer": student + ["-p", "trigger:=timer"],
        "baseline": [sys.executable, str(REPO / "bench" / "baseline_node.py"), "--ros-args",
                     "-p", f"joints:={','.join(LEGS)}",
                     "-p", f"hidden:={','.join(map(str, HIDDEN))}"],
    }
    sensors = start([sys.executable, __file__, "--role", "sensors", "--rate-hz",
                     str(args.rate_hz)] + infra, env, os.path.join(workdir, "sensors.log"))
    names = args.cases.split(",")
    runs: dict = {name: [] for name in names}
    cpu: dict = {name: [] for name in names}  # CPU seconds per second of the node under test
    try:
        for round_index in range(args.repeat):
            for name in names:
                print(f"round {round_index + 1}/{args.repeat}: {name} for "
                      f"{args.duration_s:g} s ...", flush=True)
                rows, cpu_share = run_case(name, cases[name], env, args.duration_s, workdir,
                                           infra)
                runs[name].append(rows)
                cpu[name].append(cpu_share)
    finally:
        stop(sensors)
    results = {}
    for name in names:
        results[name] = summarize(runs[name], args.rate_hz, WARMUP_S)
        results[name]["cpu_percent"] = 100.0 * float(np.mean(cpu[name]))
        if results[name].get("actions"):  # CPU per action: load-independent-ish cost figure
            results[name]["cpu_us_per_action"] = 1e4 * results[name]["cpu_percent"] / \
                results[name]["rate_hz"]
        results[name]["log"] = os.path.join(workdir, f"{name}_node.log")
    print(f"\nsensor message -> action echo at {args.rate_hz:g} Hz, {args.repeat} x "
          f"{args.duration_s:g} s per case (logs in {workdir})")
    print(f"{'case':<14}{'actions':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'rate Hz':>9}"
          f"{'jitter ms':>11}{'misses':>8}{'fallback':>9}{'cpu %':>7}{'cpu us/act':>11}")
    for name, r in results.items():
        if not r.get("actions"):
            print(f"{name:<14} no actions received (see {r.get('log')})")
            continue
        print(f"{name:<14}{r['actions']:>8}{r['p50_ms']:>9.3f}{r['p99_ms']:>9.3f}"
              f"{r['max_ms']:>9.3f}{r['rate_hz']:>9.1f}{r['jitter_ms']:>11.3f}{r['misses']:>8}"
              f"{r['fallbacks']:>9}{r['cpu_percent']:>7.1f}{r['cpu_us_per_action']:>11.0f}")
    base = results.get("baseline", {})
    for name in ("on_message", "on_message_rt", "timer"):
        if base.get("actions") and results.get(name, {}).get("actions"):
            per_round = [_p99(b) / _p99(s) for b, s in zip(runs["baseline"], runs[name])]
            print(f"p99 ratio baseline / student {name}: "
                  f"{base['p99_ms'] / results[name]['p99_ms']:.1f}x pooled, per round "
                  f"{', '.join(f'{r:.1f}x' for r in per_round)}")
    print(json.dumps(results))


def _p99(rows: np.ndarray) -> float:
    rows = rows[rows[:, 0] > rows[0, 0] + WARMUP_S * 1e9]
    return float(np.percentile((rows[:, 0] - rows[:, 1]) / 1e6, 99))


if __name__ == "__main__":
    main()
