"""`policy-distill deploy`: the robot side in closed loop, then what the timing monitor measured.

    policy-distill deploy [--model models/ant_student.onnx] [--source stream|sim]
                          [--duration-s 10] [--sensor-rate-hz 500] [--json figures.json]

Starts, as child processes (the executables `ros2 launch student.launch.py` starts, with the
same params file, config/student.yaml): a sensor source, the student node and the timing
monitor. Sources: `stream` (default), a synthetic JointState + Imu stream at --sensor-rate-hz
with the model's joint names (nodes/sensor_stream_node.py); `sim`, the embedded MuJoCo
simulator in realtime mode, so the student drives the Ant (then the nodes run on sim time and
latencies are in sim time, quantized by the 20 Hz steps). The student runs inference on each
`joint_states` message (`--trigger on_message`, default) or on its own timer.

The figures come from the monitor's /diagnostics, read by a small listener in this process:
latency (echo stamp -> action seen) p50/p99/max since the monitor started, action rate, jitter,
deadline misses, fallbacks (flagged by the student; sent by the monitor). The run lasts
--duration-s from the first action. Ctrl-C stops every child (by pid) and exits 130.
Without --model and without models/ant_student.onnx, a demo student with random weights is
built for config/specs/ant_student.yaml (numpy + onnx; no torch on this path).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from policy_distill_ros.core.memory import process_memory_mib
from policy_distill_ros.processes import REPO_ROOT, CliPeer, NodeProcess

HELP = "student node + timing monitor in closed loop; prints what the monitor measured"
LOG = logging.getLogger("policy-distill.deploy")
DEFAULT_MODEL = "models/ant_student.onnx"
DEMO_SPEC = "config/specs/ant_student.yaml"
DEFAULT_PARAMS = "config/student.yaml"
DEFAULT_SIM_CONFIG = "config/sim.yaml"
STUDENT, MONITOR = "student_node", "timing_monitor_node"
STARTUP_TIMEOUT_S = 60.0
FINAL_DIAGNOSTICS_WAIT_S = 2.5  # diagnostics come at 1 Hz: one more after the run

# figure name -> (diagnostics key, label in the table, format)
FIGURES = {
    "actions": ("actions", "actions", "{:.0f}"),
    "action_rate_hz": ("rate_hz", "action rate (Hz)", "{:.1f}"),
    "latency_p50_ms": ("latency_p50_ms_total", "latency p50 (ms)", "{:.3f}"),
    "latency_p99_ms": ("latency_p99_ms_total", "latency p99 (ms)", "{:.3f}"),
    "latency_max_ms": ("latency_max_ms_total", "latency max (ms)", "{:.3f}"),
    "jitter_ms": ("jitter_ms", "period jitter, std (ms)", "{:.3f}"),
    "deadline_misses": ("deadline_misses", "deadline misses", "{:.0f}"),
    "student_fallbacks": ("student_fallbacks", "fallback actions (student)", "{:.0f}"),
    "monitor_fallbacks": ("monitor_fallbacks", "fallback commands (monitor)", "{:.0f}"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None,
                        help=f"student policy file (default {DEFAULT_MODEL}; a demo student "
                             "with random weights when that does not exist)")
    parser.add_argument("--source", choices=("stream", "sim"), default="stream",
                        help="sensor source: synthetic stream (default) or the embedded sim")
    parser.add_argument("--duration-s", type=float, default=10.0,
                        help="how long to run after the first action (default 10)")
    parser.add_argument("--sensor-rate-hz", type=float, default=500.0,
                        help="stream source: JointState + Imu rate (default 500)")
    parser.add_argument("--trigger", choices=("on_message", "timer"), default="on_message",
                        help="student inference on each joint_states message (default) or on "
                             "its own timer at --rate-hz")
    parser.add_argument("--rate-hz", type=float, default=0.0,
                        help="timer trigger: control rate (default: the model's)")
    parser.add_argument("--deadline-ms", type=float, default=0.0,
                        help="monitor deadline (default: two control periods)")
    parser.add_argument("--params-file", default=DEFAULT_PARAMS,
                        help="student_node + timing_monitor_node parameters (student.yaml)")
    parser.add_argument("--sim-config", default=DEFAULT_SIM_CONFIG,
                        help="sim source: sim_node params file")
    parser.add_argument("--seed", type=int, default=0, help="sim / stream seed")
    parser.add_argument("--json", default=None, help="write the figures here")
    parser.add_argument("--log-dir", default=None,
                        help="node logs here (default: a new temporary directory)")


@dataclass
class Plan:
    """What runs: the processes in start order and how to read the results."""

    model: Path
    demo_model: bool
    action_rate_hz: float
    sim_time: bool
    processes: list[NodeProcess] = field(default_factory=list)


def resolve(path: str) -> Path | None:
    """An existing file: as given (relative to the working directory), else in the package."""
    for candidate in (Path(path), REPO_ROOT / path):
        if candidate.is_file():
            return candidate.resolve()
    return None


def _required(path: str, what: str) -> Path:
    found = resolve(path)
    if found is None:
        raise SystemExit(f"policy-distill deploy: {what} {path!r} not found")
    return found


def ensure_model(model_arg: str | None, workdir: Path) -> tuple[Path, bool]:
    """(policy file, is_demo). Builds the demo student when no model is given or found."""
    if model_arg is not None:
        return _required(model_arg, "--model"), False
    found = resolve(DEFAULT_MODEL)
    if found is not None:
        return found, False
    from policy_distill_ros.core.demo_policy import make_demo_policy
    from policy_distill_ros.core.spec import load_policy_spec
    spec = load_policy_spec(str(_required(DEMO_SPEC, "demo spec")))
    path = make_demo_policy(workdir / "demo_ant_student.onnx", spec)
    LOG.warning("no %s: deploying a demo student with RANDOM weights (%s)", DEFAULT_MODEL, path)
    return path, True


def node_params(params_file: Path, node_name: str) -> dict:
    """What a root-namespace `node_name` reads from a ROS params file ({} when nothing applies)."""
    from policy_distill_ros.params_file import node_params as matching
    return matching(params_file, node_name)


def plan_run(args: argparse.Namespace, workdir: Path) -> Plan:
    from policy_distill_ros.core.policy_file import read_metadata
    model, demo = ensure_model(args.model, workdir)
    meta = read_metadata(model)
    params_file = _required(args.params_file, "--params-file")
    student = node_params(params_file, STUDENT)
    monitor = node_params(params_file, MONITOR)
    if args.source == "sim":
        from policy_distill_ros.sim.config import load_sim_config
        sim_file = _required(args.sim_config, "--sim-config")
        sensor_rate_hz = float(load_sim_config(sim_file).rate_hz)  # in sim time
        source = NodeProcess("sim_node", "sim_node", dict(
            node_params(sim_file, "sim_node"), mode="realtime", num_episodes=0, seed=args.seed),
            log_path=str(workdir / "sim_node.log"))
        student["episode_topic"] = "episode"
    else:
        if not args.sensor_rate_hz > 0:
            raise SystemExit("policy-distill deploy: --sensor-rate-hz must be > 0")
        sensor_rate_hz = args.sensor_rate_hz
        source = NodeProcess("sensor_stream_node", "sensor_stream_node", {
            "model_path": str(model), "rate_hz": sensor_rate_hz, "seed": args.seed},
            log_path=str(workdir / "sensor_stream_node.log"))
    if args.trigger == "on_message":
        rate_hz = sensor_rate_hz
        student.update(trigger="on_message", trigger_topic="joint_states", rate_hz=rate_hz)
    else:
        rate_hz = args.rate_hz or float(meta.rate_hz)
        student.update(trigger="timer", rate_hz=rate_hz)
    sim_time = args.source == "sim"
    student.update(model_path=str(model), use_sim_time=sim_time, autostart=True)
    monitor.update(model_path=str(model), use_sim_time=sim_time, expected_rate_hz=rate_hz,
                   student_node=STUDENT, trigger=args.trigger)
    if args.deadline_ms > 0:
        monitor["deadline_s"] = args.deadline_ms * 1e-3
    plan = Plan(model, demo, rate_hz, sim_time)
    plan.processes = [
        source,
        NodeProcess(MONITOR, MONITOR, monitor, log_path=str(workdir / f"{MONITOR}.log")),
        NodeProcess(STUDENT, STUDENT, student, log_path=str(workdir / f"{STUDENT}.log")),
    ]
    return plan


class DiagnosticsListener(CliPeer):
    """Keeps the newest values of the monitor's status on /diagnostics."""

    def __init__(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray

        super().__init__("policy_distill_deploy")
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.values: dict[str, str] = {}
        self.level: int | None = None
        self.message = ""
        self.received = 0

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.name.startswith(f"{MONITOR}:"):
                self.values = {kv.key: kv.value for kv in status.values}
                self.level = int.from_bytes(status.level, "little") \
                    if isinstance(status.level, bytes) else int(status.level)
                self.message = status.message
                self.received += 1

    def student_state(self, timeout_s: float = 3.0) -> str:
        """The student's lifecycle state label ('active', 'inactive', ...), '' if no answer."""
        from lifecycle_msgs.srv import GetState
        client = self.node.create_client(GetState, f"/{STUDENT}/get_state")
        try:
            end = time.monotonic() + timeout_s
            while not client.service_is_ready() and time.monotonic() < end:
                self.spin_for(0.05)
            if not client.service_is_ready():
                return ""
            future = client.call_async(GetState.Request())
            while not future.done() and time.monotonic() < end:
                self.executor.spin_once(timeout_sec=0.05)
            return future.result().current_state.label if future.done() else ""
        finally:
            self.node.destroy_client(client)

    def number(self, key: str) -> float:
        try:
            return float(self.values[key])
        except (KeyError, ValueError):
            return math.nan


def _check_children(plan: Plan) -> None:
    for proc in plan.processes:
        if not proc.alive():
            raise RuntimeError(f"{proc.node_name} exited with code {proc.proc.returncode}; "
                               f"its log: {proc.log_path}\n{proc.read_log()[-2000:]}")


def measure(plan: Plan, listener: DiagnosticsListener, duration_s: float) -> float:
    """Wait for the first action, run `duration_s`, take one more diagnostics; returns the
    measured duration."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not listener.number("actions") > 0:
        _check_children(plan)
        if time.monotonic() > deadline:
            raise RuntimeError(f"no action reached the timing monitor within "
                               f"{STARTUP_TIMEOUT_S:g} s; logs: "
                               f"{', '.join(p.log_path for p in plan.processes)}")
        listener.spin_for(0.2)
    started = time.monotonic()
    LOG.info("actions flowing; measuring for %g s", duration_s)
    next_report = started + 2.0
    while time.monotonic() - started < duration_s:
        _check_children(plan)
        listener.spin_for(min(0.2, duration_s - (time.monotonic() - started)))
        if time.monotonic() >= next_report:
            next_report += 2.0
            LOG.info("%5.1f s: %s actions, latency p99 %s ms, deadline misses %s",
                     time.monotonic() - started, listener.values.get("actions"),
                     listener.values.get("latency_p99_ms_total"),
                     listener.values.get("deadline_misses"))
    measured_s = time.monotonic() - started
    seen = listener.received
    end = time.monotonic() + FINAL_DIAGNOSTICS_WAIT_S
    while listener.received == seen and time.monotonic() < end:
        listener.spin_for(0.05)
    return measured_s


def figures_of(listener: DiagnosticsListener) -> dict[str, float]:
    return {name: listener.number(key) for name, (key, _, _) in FIGURES.items()}


def format_table(figures: dict[str, float]) -> str:
    width = max(len(label) for _, label, _ in FIGURES.values())
    lines = [f"{'figure':<{width}}  value", f"{'-' * width}  {'-' * 10}"]
    for name, (_, label, fmt) in FIGURES.items():
        value = figures[name]
        lines.append(f"{label:<{width}}  {fmt.format(value) if math.isfinite(value) else 'n/a'}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if not args.duration_s > 0:
        raise SystemExit("policy-distill deploy: --duration-s must be > 0")
    workdir = Path(args.log_dir) if args.log_dir else \
        Path(tempfile.mkdtemp(prefix="policy_distill_deploy_"))
    workdir.mkdir(parents=True, exist_ok=True)
    plan = plan_run(args, workdir)
    previous_term = signal.signal(signal.SIGTERM, _interrupt)  # a supervisor's stop = Ctrl-C
    listener: DiagnosticsListener | None = None
    try:
        listener = DiagnosticsListener()
        for proc in plan.processes:
            proc.start()
            LOG.info("started %s (pid %d), log %s", proc.node_name, proc.pid, proc.log_path)
        measured_s = measure(plan, listener, args.duration_s)
        figures = figures_of(listener)
        level, message, values = listener.level, listener.message, dict(listener.values)
        student_state = listener.student_state()
        memory = process_memory_mib(plan.processes[2].pid)   # the student, after the run
    finally:
        source, monitor, student = plan.processes
        for proc in (monitor, student, source):  # the watcher first, so stopping the student
            proc.stop()                            # is not answered with fallback commands
        if listener is not None:
            listener.close()
        signal.signal(signal.SIGTERM, previous_term)
    source = "embedded sim (realtime, sim time)" if args.source == "sim" else \
        f"sensor stream at {args.sensor_rate_hz:g} Hz"
    print(f"\npolicy-distill deploy: {measured_s:.1f} s, source {source}, trigger {args.trigger}, "
          f"{plan.action_rate_hz:g} Hz expected\nmodel {plan.model}"
          f"{' (demo student, random weights)' if plan.demo_model else ''}\n"
          f"monitor status: {message}\n")
    print(format_table(figures))
    if memory:
        print(f"student node memory: RSS {memory['rss_mib']:.1f} MiB, peak "
              f"{memory['peak_mib']:.1f} MiB (after {measured_s:.0f} s)")
    if plan.sim_time:
        print("(sim source: latency, rate and jitter are in sim time)")
    print(f"logs: {workdir}")
    if args.json:
        report = {"model": str(plan.model), "demo_model": plan.demo_model,
                  "source": args.source, "trigger": args.trigger,
                  "sensor_rate_hz": None if args.source == "sim" else args.sensor_rate_hz,
                  "expected_rate_hz": plan.action_rate_hz, "sim_time": plan.sim_time,
                  "duration_s": measured_s, "figures": figures, "monitor_level": level,
                  "monitor_message": message, "student_state": student_state,
                  "diagnostics": values, "log_dir": str(workdir),
                  "student_memory_mib": memory}
        Path(args.json).write_text(json.dumps(report, indent=2, allow_nan=True) + "\n")
    ok = figures["actions"] > 0 and all(math.isfinite(v) for v in figures.values())
    if not ok:
        LOG.error("the monitor saw no actions or reported non-finite figures; logs in %s",
                  workdir)
    if student_state != "active":
        ok = False
        LOG.error("the student was %s at the end of the run (the monitor deactivates it when "
                  "its stop latches, escalation: latch); logs in %s",
                  student_state or "not answering", workdir)
    return 0 if ok else 1


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt
