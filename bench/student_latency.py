"""Sensor-message-to-action latency: student node (ONNX Runtime) vs a plain rclpy + torch node.

    .venv/bin/python bench/student_latency.py [--duration-s 20] [--rate-hz 500] [--repeat 3]
        [--cases echo,on_message,on_message_rt,timer,timer_floor,baseline] [--drop-check-hz 1000]
        [--before CHECKOUT --cases ...,on_message_before,timer_before]
    .venv/bin/python bench/student_latency.py --stages 5000 [--cold]   # in-process, where time goes
    .venv/bin/python bench/student_latency.py --profile on_message   # py-spy on the running node

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
  io_floor            the student's own DDS pattern without compute: joint_states wakes it,
                      the imu is taken too, a command and the echo go out (2 in, 2 out)
  student on_message  inference in the joint_states callback: message in -> action out
  on_message_rt       the same with `realtime_priority:=50` (SCHED_FIFO for the student process,
                      what a robot deployment would use; needs root/CAP_SYS_NICE)
  student timer       fixed-rate loop thread: adds a sampling delay of 0..1 period on top
  timer_floor         the student's timer pattern without compute: core's LoopTimer, the
                      takes of both topics at each due time, a command and the echo out; its
                      lateness against the due times is the floor of the timer target
  baseline            inference in the joint_states callback, torch, default executor
Deadline misses: echo gaps longer than 2 control periods (an action that never came).
Unanswered frames: sensor frames (stamps the publisher saved) that no echo carries; the
on_message case also runs at --drop-check-hz (1 kHz) for the "acts on every frame" target.
Timer lateness: the student's own account, logged when its loop stops (publish time minus the
tick's due time). The student runs without a timing monitor (enforcement_wait_s 0). The run
ends with issue 15's targets, each marked met / NOT MET.
`--rt-infra`: the sensor publisher, the probe and the echo node run under SCHED_FIFO, so on a
loaded machine the measuring side is not what gets starved; the nodes under test keep normal
scheduling (except on_message_rt).
"""
from __future__ import annotations

import argparse
import json
import os
import re
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
def run_sensors(rate_hz: float, out_path: str) -> None:
    """Absolute-time publishing thread so the input stream itself is steady; every frame's stamp
    is saved to `out_path` at the end (frames without an action are counted against it)."""
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
    stamps = np.zeros(4_000_000, dtype=np.int64)
    count = 0
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
            if count < len(stamps):
                stamps[count] = stamp.sec * 1_000_000_000 + stamp.nanosec
                count += 1
    except KeyboardInterrupt:
        pass
    finally:
        if out_path:
            np.save(out_path, stamps[:count])
        node.destroy_node()
        rclpy.try_shutdown()


def _until_sigint() -> None:
    """Sleep on the main thread (where Python runs the SIGINT handler) until SIGINT."""
    import rclpy
    try:
        while rclpy.ok():
            time.sleep(0.1)
    except KeyboardInterrupt:
        pass


def _serve(node, subscriptions, name: str, passive=()) -> None:
    """Serve raw subscriptions on a TakeLoop thread until SIGINT."""
    from policy_distill_ros.nodes.rclpy_internals import TakeLoop
    loop = TakeLoop(node, subscriptions, name, passive=passive).start()
    try:
        _until_sigint()
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
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import JointState
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

    # every echo counts (an unanswered frame is the node's, not the probe's): reliable and a
    # deep queue, as the timing monitor subscribes
    deep = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1000,
                      reliability=ReliabilityPolicy.RELIABLE)
    subscription = node.create_subscription(JointState, "policy_action", on_echo, deep,
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


def run_io_floor() -> None:
    """The student's DDS pattern with no compute: one wake-up per frame (joint_states; the imu
    taken passively first), then a command and an echo published, as the student does. What a
    Python node with the student's inputs and outputs costs before any policy work."""
    import rclpy
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import Imu, JointState
    from std_msgs.msg import Float64MultiArray

    from policy_distill_ros.nodes.ros_common import COMMAND_QOS, SENSOR_QOS
    rclpy.init()
    node = rclpy.create_node("bench_io_floor")
    command_pub = node.create_publisher(Float64MultiArray, "policy_command", COMMAND_QOS)
    echo_pub = node.create_publisher(JointState, "policy_action", COMMAND_QOS)
    command = serialize_message(Float64MultiArray(data=[0.0] * len(LEGS)))

    def on_joints(raw: bytes) -> None:
        command_pub.publish(command)
        echo_pub.publish(raw)

    joints = node.create_subscription(JointState, "joint_states", on_joints, SENSOR_QOS,
                                      raw=True)
    imu = node.create_subscription(Imu, "imu", lambda raw: None, SENSOR_QOS, raw=True)
    try:
        _serve(node, [joints], "io_floor", passive=[imu])
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


def run_timer_floor(rate_hz: float) -> None:
    """The student's timer pattern with no compute: core's LoopTimer at `rate_hz`; each tick
    takes what arrived on both sensor topics, then a command and the newest joint_states (as
    the echo) go out. It logs its lateness against the due times in the student's own words,
    so the timer target can be read against what the loop, the takes and the publishes cost
    on this machine before any policy work."""
    import rclpy
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import Imu, JointState
    from std_msgs.msg import Float64MultiArray

    from policy_distill_ros.core.loop_timer import LoopTimer, lateness_line
    from policy_distill_ros.core.timing import LogHistogram
    from policy_distill_ros.nodes.ros_common import COMMAND_QOS, SENSOR_QOS
    rclpy.init()
    node = rclpy.create_node("bench_timer_floor")
    command_pub = node.create_publisher(Float64MultiArray, "policy_command", COMMAND_QOS)
    echo_pub = node.create_publisher(JointState, "policy_action", COMMAND_QOS)
    command = serialize_message(Float64MultiArray(data=[0.0] * len(LEGS)))
    subs = [node.create_subscription(kind, topic, lambda raw: None, SENSOR_QOS, raw=True)
            for kind, topic in ((Imu, "imu"), (JointState, "joint_states"))]
    takes = [(sub.handle, kind) for sub, kind in zip(subs, (Imu, JointState), strict=True)]
    lateness = LogHistogram()
    newest = [None]

    def tick() -> None:
        for handle, kind in takes:
            taken = handle.take_message(kind, True)
            while taken is not None:
                if kind is JointState:
                    newest[0] = taken[0]
                taken = handle.take_message(kind, True)
        if newest[0] is None:
            return
        command_pub.publish(command)
        echo_pub.publish(newest[0])
        lateness.add(time.monotonic() - loop.due_s)

    loop = LoopTimer(1.0 / rate_hz, tick, name="timer_floor")
    loop.start()
    try:
        _until_sigint()
    finally:
        loop.stop()
        if lateness.count:  # the student's own line, so TIMER_LINE reads both
            print(lateness_line(lateness, loop), flush=True)
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


def run_stages(model: str, rate_hz: float, iterations: int, cold: bool = False,
               student_from: str = "") -> None:
    """Where the time goes, without DDS or other processes: the student's message handlers (the
    node's own raw subscription callbacks, fed the serialized bytes the live path takes: the
    sensor publisher's frames, shuffled joint order plus an extra joint) and their stages, and
    the baseline's callback with the same messages. `cold`: before each frame 6 MB are written
    and the process sleeps 1 ms, evicting caches as the other processes of a live run do (a
    live frame costs several times its warm in-process time, see README). `student_from`:
    the student of another checkout (--before), same harness and frames, no baseline."""
    import collections

    sys.path.insert(0, str(REPO))
    for name in [m for m in sys.modules if m.split(".")[0] == "policy_distill_ros"]:
        del sys.modules[name]  # imported from whichever checkout comes first on the path
    if student_from:
        sys.path.insert(0, os.path.abspath(student_from))

    import rclpy
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import Imu, JointState

    from policy_distill_ros.core import cdr, observation, policy_file, spec
    from policy_distill_ros.nodes import action_publisher, student_node
    times = collections.defaultdict(list)

    def timed(cls, name: str, label: str) -> None:
        if not hasattr(cls, name):  # before act(): the node called the policy itself
            name = "__call__"
        inner = getattr(cls, name)

        def wrapper(*args, **kwargs):
            t0 = time.perf_counter_ns()
            try:
                return inner(*args, **kwargs)
            finally:
                times[label].append(time.perf_counter_ns() - t0)
        setattr(cls, name, wrapper)

    rclpy.init(args=["--ros-args", "--log-level", "fatal", "-p", f"model_path:={model}",
                     "-p", f"rate_hz:={rate_hz}", "-p", "trigger:=on_message",
                     "-p", "trigger_topic:=joint_states", "-p", "max_input_age_s:=10.0",
                     "-p", "enforcement_wait_s:=0.0"])
    node = student_node.StudentNode()
    handlers = {sub.topic_name.lstrip("/"): sub.callback for sub in node._io.subscriptions}
    on_joints, on_imu = handlers["joint_states"], handlers["imu"]
    rng = np.random.default_rng(0)
    order = list(reversed(LEGS)) + ["extra_joint"]
    joints = JointState(name=order)
    imu = Imu()
    imu.orientation.w = 1.0
    evict = np.ones(6_000_000 // 8) if cold else None

    def frame() -> tuple:
        joints.position = (0.1 * rng.standard_normal(len(order))).tolist()
        joints.velocity = rng.standard_normal(len(order)).tolist()
        imu.angular_velocity.x = float(rng.standard_normal())
        sec, nanosec = divmod(time.time_ns(), 1_000_000_000)
        for msg in (imu, joints):
            msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nanosec
        info = {"received_timestamp": time.time_ns()}
        return serialize_message(imu), serialize_message(joints), info

    calls = {"call": 0, "c_call": 0}  # Python-level calls per frame (before the timing)

    def count(frame, event, arg) -> None:
        if event in calls:
            calls[event] += 1
    for k in range(200):
        imu_bytes, joints_bytes, info = frame()
        if k >= 100:  # the first frames fill caches (joint names, index maps)
            sys.setprofile(count)
        on_imu(imu_bytes, info)
        on_joints(joints_bytes, info)
        sys.setprofile(None)
    for cls, name, label in (
            (cdr.JointStateDecoder, "__call__", "  decode joint_states bytes (core)"),
            (observation.ObservationAssembler, "on_message", "  assemble one message (core)"),
            (observation.ObservationAssembler, "build", "  build history vector (core)"),
            (policy_file.OnnxPolicy, "act", "  onnxruntime inference (core)"),
            (spec.ActionSpec, "postprocess", "  postprocess action (core)"),
            (action_publisher.ActionPublisher, "publish", "  publish command + echo")):
        timed(cls, name, label)
    for _ in range(iterations):
        imu_bytes, joints_bytes, info = frame()
        if cold:
            evict += 1.0
            time.sleep(0.001)
        t0 = time.perf_counter_ns()
        on_imu(imu_bytes, info)
        t1 = time.perf_counter_ns()
        on_joints(joints_bytes, info)
        t2 = time.perf_counter_ns()
        times["student: imu message handled"].append(t1 - t0)
        times["student: joint_states in -> action out"].append(t2 - t1)
        times["student: whole frame"].append(t2 - t0)
    ticks = node.ticks
    node.destroy_node()
    rclpy.try_shutdown()
    print(f"\nper frame: {calls['call'] / 100:.0f} Python function calls, "
          f"{calls['c_call'] / 100:.0f} calls of built-in functions (sys.setprofile; numpy "
          "ufuncs are not counted)", end="")
    print(f"\nin-process stage costs, {iterations} iterations ({ticks} student ticks)"
          f"{', caches evicted before each frame' if cold else ''}; student from "
          f"{os.path.dirname(os.path.dirname(student_node.__file__))}, us:")
    if student_from:
        del sys.path[0]
        return print_stages(times)
    from baseline_node import BaselineNode  # torch, only for the comparison
    rclpy.init(args=["--ros-args", "-p", f"joints:={','.join(LEGS)}",
                     "-p", f"hidden:={','.join(map(str, HIDDEN))}"])
    base = BaselineNode()
    for _ in range(iterations):
        if cold:
            evict += 1.0
            time.sleep(0.001)
        t0 = time.perf_counter_ns()
        base.on_imu(imu)
        base.on_joints(joints)
        times["baseline: imu + joint_states callbacks"].append(time.perf_counter_ns() - t0)
    base.destroy_node()
    rclpy.try_shutdown()
    print_stages(times)


def print_stages(times: dict) -> None:
    print(f"{'stage':<42}{'p50':>8}{'p99':>8}{'max':>9}")
    order = ["student: imu message handled", "student: joint_states in -> action out",
             "student: whole frame"] + [k for k in times if k.startswith("  ")] + \
        ["baseline: imu + joint_states callbacks"]
    for label in (k for k in order if times.get(k)):
        us = np.array(times[label][len(times[label]) // 10:]) / 1e3
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
    return rows, cpu_s / duration_s, timer_lateness(os.path.join(workdir, f"{name}_node.log"))


TIMER_LINE = re.compile(r"timer loop: (\d+) actions, published after their due time p50 "
                        r"([\d.]+) / p99 ([\d.]+) / max ([\d.]+) ms; (\d+) ticks skipped")


def timer_lateness(log_path: str) -> dict:
    """The student's own account of its timer loop (logged when the loop stops): how late its
    actions went out against their due times, and the ticks it skipped."""
    try:
        with open(log_path) as f:
            match = TIMER_LINE.search(f.read())
    except OSError:
        return {}
    if match is None:
        return {}
    return {"due_actions": int(match[1]), "due_p50_ms": float(match[2]),
            "due_p99_ms": float(match[3]), "due_max_ms": float(match[4]),
            "skipped_ticks": int(match[5])}


def dropped_frames(rows: np.ndarray, sent_ns: np.ndarray, warmup_s: float) -> tuple:
    """(frames sent while the node ran, after its warm-up; of those, frames no action answered)."""
    rows = rows[rows[:, 0] > rows[0, 0] + warmup_s * 1e9] if len(rows) else rows
    if len(rows) < 2:
        return 0, 0
    answered = np.unique(rows[:, 1])
    sent = sent_ns[(sent_ns >= answered[0]) & (sent_ns <= answered[-1])]
    return int(len(sent)), int(len(sent) - np.isin(sent, answered).sum())


def profile_case(name: str, node_args: list, env: dict, duration_s: float, workdir: str,
                 infra: list, top: int, native: bool) -> None:
    """py-spy on the node under test while the probe measures it, plus CPU per thread.

    py-spy samples Python threads only; the per-thread CPU (from /proc) also shows what DDS's
    own C++ threads cost, which no Python profile can see.
    """
    out = os.path.join(workdir, f"{name}.npy")
    probe = start([sys.executable, __file__, "--role", "probe", "--out", out] + infra, env,
                  os.path.join(workdir, f"{name}_probe.log"))
    node = start(node_args, env, os.path.join(workdir, f"{name}_node.log"))
    first = out + ".first"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not os.path.exists(first) and time.monotonic() < deadline and node.poll() is None:
        time.sleep(0.1)
    time.sleep(WARMUP_S)
    threads_before = thread_cpu_s(node.pid)
    t0 = time.monotonic()
    time.sleep(duration_s)  # CPU per thread first, undisturbed by the sampler
    elapsed_s = time.monotonic() - t0
    threads = {k: v - threads_before.get(k, 0.0) for k, v in thread_cpu_s(node.pid).items()}
    raw = os.path.join(workdir, f"{name}.pyspy.txt")
    # --gil: samples of a thread running Python (a blocking wait releases the GIL, so sleeping
    # is not counted as work); --nonblocking (not with --native): the node is never paused
    spy = [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(node.pid),
           "--duration", f"{duration_s:g}", "--rate", "1000", "--format", "raw", "--nolineno",
           "--gil", "--output", raw] + (["--native"] if native else ["--nonblocking"])
    try:
        subprocess.run(spy, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    finally:
        stop(node)
        stop(probe)
    rows = np.load(out)
    rows = rows[rows[:, 0] > rows[0, 0] + WARMUP_S * 1e9] if len(rows) else rows
    rate_hz = (len(rows) - 1) / (rows[-1, 0] - rows[0, 0]) * 1e9 if len(rows) > 1 else 0.0
    print(f"\n{name}: CPU per thread over {elapsed_s:.1f} s ({rate_hz:.0f} actions/s), "
          f"us per action (threads named 'python' are Python's, the rest DDS's):")
    for thread, cpu_s in sorted(threads.items(), key=lambda kv: -kv[1]):
        if cpu_s > 0:
            print(f"  {thread:<24}{1e6 * cpu_s / elapsed_s / max(rate_hz, 1):>8.1f}")
    print(f"  {'all':<24}{1e6 * sum(threads.values()) / elapsed_s / max(rate_hz, 1):>8.1f}")
    print_profile(raw, top)


def thread_cpu_s(pid: int) -> dict:
    """CPU seconds of each thread of a process by thread name (same names summed)."""
    totals: dict = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "stat").read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1:text.rindex(")")]
        fields = text.rsplit(")", 1)[1].split()
        totals[name] = totals.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / \
            os.sysconf("SC_CLK_TCK")
    return totals


def print_profile(raw_path: str, top: int) -> None:
    """Top functions of a py-spy raw (collapsed-stack) file: own samples and inclusive."""
    own: dict = {}
    inclusive: dict = {}
    total = 0
    with open(raw_path) as f:
        for line in f:
            stack, _, count = line.rstrip().rpartition(" ")
            if not stack:
                continue
            n = int(count)
            frames = [fr for fr in stack.split(";") if not fr.startswith(("process ",
                                                                             "thread "))]
            if not frames:
                continue
            total += n
            own[frames[-1]] = own.get(frames[-1], 0) + n
            for frame in set(frames):
                inclusive[frame] = inclusive.get(frame, 0) + n
    print(f"py-spy: {total} samples of busy Python threads; top {top} by own samples:")
    print(f"{'own %':>7}{'incl %':>8}  function")
    for frame, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        print(f"{100 * n / total:>7.1f}{100 * inclusive[frame] / total:>8.1f}  {frame[:110]}")
    print(f"top {top} by inclusive samples:")
    for frame, n in sorted(inclusive.items(), key=lambda kv: -kv[1])[:top]:
        print(f"{100 * own.get(frame, 0) / total:>7.1f}{100 * n / total:>8.1f}  {frame[:110]}")


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
    parser.add_argument("--role", choices=("main", "sensors", "probe", "echo", "io_floor",
                                           "timer_floor"),
                        default="main")
    parser.add_argument("--out", default="")
    parser.add_argument("--duration-s", type=float, default=20.0)
    parser.add_argument("--rate-hz", type=float, default=500.0)
    parser.add_argument("--cases", default="echo,io_floor,on_message,timer,baseline")
    parser.add_argument("--rt-infra", action="store_true",
                        help="SCHED_FIFO for the sensor publisher, the probe and the echo node")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run the case list this many times, interleaved (a shared "
                             "machine's load changes over minutes); figures pool the runs")
    parser.add_argument("--profile", default="", metavar="CASE",
                        help="instead: one run of CASE under py-spy, top functions and CPU per "
                             "thread")
    parser.add_argument("--native", action="store_true",
                        help="with --profile: native (C/C++) frames too")
    parser.add_argument("--top", type=int, default=25, help="with --profile: rows per table")
    parser.add_argument("--drop-check-hz", type=float, default=1000.0,
                        help="also run on_message at this input rate and count the frames "
                             "without an action (0: skip)")
    parser.add_argument("--before", default="", metavar="CHECKOUT",
                        help="also run the student of another checkout (cases on_message_before, "
                             "timer_before), for a before/after comparison in one run")
    parser.add_argument("--stages", type=int, default=0, metavar="N",
                        help="instead: N in-process iterations, per-stage costs (no DDS)")
    parser.add_argument("--cold", action="store_true",
                        help="with --stages: evict the caches before each frame, as a live "
                             "run's other processes do")
    args = parser.parse_args()
    if args.rt_infra and args.role != "main":
        from policy_distill_ros.core.realtime import set_realtime_priority
        problem = set_realtime_priority(60)
        if problem:
            print(problem, file=sys.stderr)
    if args.role == "sensors":
        return run_sensors(args.rate_hz, args.out)
    if args.role == "probe":
        return run_probe(args.out)
    if args.role == "echo":
        return run_echo()
    if args.role == "io_floor":
        return run_io_floor()
    if args.role == "timer_floor":
        return run_timer_floor(args.rate_hz)

    workdir = tempfile.mkdtemp(prefix="student_latency_")
    env = bench_env()
    model = os.path.join(workdir, "student.onnx")
    make_model(model, args.rate_hz)
    if args.stages:
        sys.path.insert(0, str(REPO / "bench"))
        os.environ.update(ROS_DOMAIN_ID=env["ROS_DOMAIN_ID"],  # nobody else hears us
                          ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
        if args.before:  # the other checkout's student first: same harness, same frames
            run_stages(model, args.rate_hz, args.stages, args.cold, args.before)
        return run_stages(model, args.rate_hz, args.stages, args.cold)
    infra = ["--rt-infra"] if args.rt_infra else []
    if args.profile:
        sensors = start([sys.executable, __file__, "--role", "sensors", "--rate-hz",
                         str(args.rate_hz)] + infra, env, os.path.join(workdir, "sensors.log"))
        try:
            command, case_env = case_commands(model, args.rate_hz, infra, env,
                                              args.before)[args.profile]
            profile_case(args.profile, command, case_env, args.duration_s, workdir, infra,
                         args.top, args.native)
        finally:
            stop(sensors)
        return
    names = args.cases.split(",")
    groups = [(args.rate_hz, names)]  # (input rate, cases); one sensor publisher per group
    if args.drop_check_hz and "on_message" in names and args.drop_check_hz != args.rate_hz:
        groups.append((args.drop_check_hz, ["on_message"]))
    results = {}
    for rate_hz, group in groups:
        commands = case_commands(model, rate_hz, infra, env, args.before)
        sent_path = os.path.join(workdir, f"sent_{rate_hz:g}.npy")
        sensors = start([sys.executable, __file__, "--role", "sensors", "--rate-hz",
                         str(rate_hz), "--out", sent_path] + infra, env,
                        os.path.join(workdir, f"sensors_{rate_hz:g}.log"))
        runs: dict = {name: [] for name in group}
        cpu: dict = {name: [] for name in group}  # CPU seconds per second of the node
        lateness: dict = {name: [] for name in group}
        try:
            for round_index in range(args.repeat):
                for name in group:
                    print(f"round {round_index + 1}/{args.repeat}: {name} at {rate_hz:g} Hz "
                          f"for {args.duration_s:g} s ...", flush=True)
                    command, case_env = commands[name]
                    rows, cpu_share, late = run_case(name, command, case_env, args.duration_s,
                                                     workdir, infra)
                    runs[name].append(rows)
                    cpu[name].append(cpu_share)
                    lateness[name].append(late)
        finally:
            stop(sensors)
        sent = np.load(sent_path) if os.path.exists(sent_path) else np.zeros(0, np.int64)
        for name in group:
            key = name if rate_hz == args.rate_hz else f"{name}@{rate_hz:g}Hz"
            r = summarize(runs[name], rate_hz, WARMUP_S)
            r["input_hz"] = rate_hz
            r["cpu_percent"] = 100.0 * float(np.mean(cpu[name]))
            if r.get("actions"):  # CPU per action: the load-robust cost figure
                r["cpu_us_per_action"] = 1e4 * r["cpu_percent"] / r["rate_hz"]
                r["p99_per_round_ms"] = [_p99(rows) for rows in runs[name]]
            counts = [dropped_frames(rows, sent, WARMUP_S) for rows in runs[name]]
            r["frames_sent"] = sum(c[0] for c in counts)
            r["frames_unanswered"] = sum(c[1] for c in counts)
            late = [x for x in lateness[name] if x]
            if late:  # worst round: a target holds only if it holds in every round
                r.update(max(late, key=lambda x: x["due_p99_ms"]))
                r["skipped_ticks"] = sum(x["skipped_ticks"] for x in late)
            r["log"] = os.path.join(workdir, f"{name}_node.log")
            results[key] = r
    print(f"\nsensor message -> action echo, {args.repeat} x {args.duration_s:g} s per case "
          f"(logs in {workdir})")
    print(f"{'case':<20}{'actions':>8}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}{'rate Hz':>9}"
          f"{'jitter':>8}{'misses':>7}{'fallbk':>7}{'unans.':>7}{'cpu %':>7}{'us/act':>8}")
    for name, r in results.items():
        if not r.get("actions"):
            print(f"{name:<20} no actions received (see {r.get('log')})")
            continue
        unanswered = r["frames_unanswered"] if name.startswith("on_message") or \
            name in ("echo", "io_floor") else "-"
        print(f"{name:<20}{r['actions']:>8}{r['p50_ms']:>8.3f}{r['p99_ms']:>8.3f}"
              f"{r['max_ms']:>8.2f}{r['rate_hz']:>9.1f}{r['jitter_ms']:>8.3f}{r['misses']:>7}"
              f"{r['fallbacks']:>7}{unanswered:>7}{r['cpu_percent']:>7.1f}"
              f"{r['cpu_us_per_action']:>8.0f}")
    print("(unans.: sensor frames no action answered; misses: gaps > 2 periods; jitter ms)")
    for name, r in results.items():
        if "due_p99_ms" in r:
            print(f"{name}: actions published after their due time p50 {r['due_p50_ms']:.3f} / "
                  f"p99 {r['due_p99_ms']:.3f} / max {r['due_max_ms']:.3f} ms (worst round, the "
                  f"node's own account), {r['skipped_ticks']} ticks skipped")
    print_targets(results)
    print(json.dumps(results))


def case_commands(model: str, rate_hz: float, infra: list, env: dict, before: str) -> dict:
    """Case name -> (command, environment). `before`: another checkout whose student runs as
    the `*_before` cases, for a before/after comparison in one run."""
    def student(trigger: list, checkout: str = "") -> tuple:
        # no timing monitor here: the student commands at once (enforcement_wait_s 0)
        # -P: the package from PYTHONPATH (this checkout, or `before`), not from the cwd
        command = [sys.executable, "-P", "-m", "policy_distill_ros.nodes.student_node",
                   "--ros-args", "-p", f"model_path:={model}", "-p", f"rate_hz:={rate_hz}",
                   "-p", "max_input_age_s:=0.05", "-p", "enforcement_wait_s:=0.0"] + trigger
        if not checkout:
            return command, env
        return command, dict(env, PYTHONPATH=checkout + os.pathsep + env["PYTHONPATH"])

    on_message = ["-p", "trigger:=on_message", "-p", "trigger_topic:=joint_states"]
    cases = {
        "echo": ([sys.executable, __file__, "--role", "echo"] + infra, env),
        "io_floor": ([sys.executable, __file__, "--role", "io_floor"], env),
        "timer_floor": ([sys.executable, __file__, "--role", "timer_floor", "--rate-hz",
                         f"{rate_hz:g}"], env),
        "on_message": student(on_message),
        "on_message_rt": student(on_message + ["-p", "realtime_priority:=50"]),
        "timer": student(["-p", "trigger:=timer"]),
        "baseline": ([sys.executable, str(REPO / "bench" / "baseline_node.py"), "--ros-args",
                      "-p", f"joints:={','.join(LEGS)}",
                      "-p", f"hidden:={','.join(map(str, HIDDEN))}"], env),
    }
    if before:
        cases["on_message_before"] = student(on_message, before)
        cases["timer_before"] = student(["-p", "trigger:=timer"], before)
    return cases


def print_targets(results: dict) -> None:
    """Issue 15's targets against this run's figures, each with a verdict."""
    def get(name: str) -> dict:
        r = results.get(name, {})
        return r if r.get("actions") else {}

    echo, student, base, timer = get("echo"), get("on_message"), get("baseline"), get("timer")
    fast = next((r for k, r in results.items() if k.startswith("on_message@") and
                 r.get("actions")), {})
    print("\ntargets (issue 15), this run:")

    def line(what: str, figure: str, ok) -> None:
        verdict = "n/a (case not run)" if ok is None else ("met" if ok else "NOT MET")
        print(f"  {what:<58}{figure:<22}{verdict}")

    if echo and student:
        ratio = student["cpu_us_per_action"] / echo["cpu_us_per_action"]
        line("CPU per action, student on_message / echo floor <= 2x", f"{ratio:.2f}x",
             ratio <= 2.0)
        extra = student["p99_ms"] - echo["p99_ms"]
        line("p99, student on_message - echo floor <= +0.5 ms", f"{extra:+.3f} ms",
             extra <= 0.5)
        floor = get("io_floor")
        if floor:
            io_ratio = floor["cpu_us_per_action"] / echo["cpu_us_per_action"]
            print(f"  (reference: io_floor, the student's 2 in + 2 out without compute, costs "
                  f"{io_ratio:.2f}x the echo floor; the student {ratio / io_ratio:.2f}x io_floor)")
    else:
        line("CPU per action, student on_message / echo floor <= 2x", "-", None)
        line("p99, student on_message - echo floor <= +0.5 ms", "-", None)
    if base and student:
        ratio = base["p99_ms"] / student["p99_ms"]
        line("p99, baseline / student on_message >= 2x", f"{ratio:.2f}x", ratio >= 2.0)
    else:
        line("p99, baseline / student on_message >= 2x", "-", None)
    if timer and "due_p99_ms" in timer:
        line("timer: p99 of (action time - due time) <= 0.5 ms",
             f"{timer['due_p99_ms']:.3f} ms, {timer['skipped_ticks']} skipped",
             timer["due_p99_ms"] <= 0.5)
    else:
        line("timer: p99 of (action time - due time) <= 0.5 ms", "-", None)
    timer_floor = get("timer_floor")
    if timer and "due_p99_ms" in timer and "due_p99_ms" in timer_floor:
        print(f"  (reference: timer_floor, the student's timer loop, takes and 2 publishes "
              f"without compute: p99 {timer_floor['due_p99_ms']:.3f} ms after the due time; "
              f"the student {timer['due_p99_ms'] - timer_floor['due_p99_ms']:+.3f} ms)")
    if fast:
        line(f"on_message at {fast['input_hz']:g} Hz: every frame answered",
             f"{fast['frames_unanswered']} of {fast['frames_sent']} not",
             fast["frames_unanswered"] == 0 and fast["frames_sent"] > 0)
    else:
        line("on_message at 1 kHz: every frame answered", "-", None)
    print("  (p99 and misses need a quiet machine; CPU per action is the load-robust figure)")


def _p99(rows: np.ndarray) -> float:
    rows = rows[rows[:, 0] > rows[0, 0] + WARMUP_S * 1e9]
    return float(np.percentile((rows[:, 0] - rows[:, 1]) / 1e6, 99))


if __name__ == "__main__":
    main()
