"""`policy-distill record`: teacher demonstrations from the embedded simulator into a rosbag2
(MCAP).

    policy-distill record [--teacher models/ant_teacher] [--episodes 10] [--out bags/]
                          [--max-episode-steps N] [--seed 0] [--mode drive|label|mix --beta B]
                          [--student student.onnx]

Starts, as child processes (the executables `ros2 launch teacher_sim.launch.py` starts, with the
same params file, config/teacher.yaml): sim_node in lockstep mode (one step per command, so the
recording does not depend on CPU speed), teacher_node, recorder_node and timing_monitor_node;
with `--student`, also student_node (DAgger data: the student drives and the teacher labels,
`--mode label`, the default then; or `--mode mix --beta B`: the student's outputs are remapped
to `student/*` and the teacher executes its own action with probability B, else forwards the
student's). The simulator starts paused and is released once the recorder and the policies
are subscribed to every topic, so the bag holds every step from the first.

When the simulator has run `--episodes` episodes it exits; the others are stopped (SIGINT, by
pid; also on Ctrl-C) and the bag is read back: path, message counts per topic, episode returns
and forward distances (privileged odometry), and lockstep steps/s through the whole node chain
(from the recorder's log times of the `episode` messages).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from policy_distill_ros.commands.deploy import node_params, resolve
from policy_distill_ros.core.contract import (
    CONTACT_FORCES,
    DYNAMICS,
    EPISODE,
    EPISODE_LABELS,
    IMU,
    JOINT_STATES,
    ODOMETRY,
    POLICY_ACTION,
    POLICY_COMMAND,
    header_stamp_ns,
    ns_to_s,
    s_to_ns,
)
from policy_distill_ros.core.fields import layout_labels
from policy_distill_ros.processes import CliPeer, NodeProcess, log_directory, sigterm_as_interrupt

HELP = "teacher demonstrations from the embedded simulator into a rosbag2 (MCAP)"
LOG = logging.getLogger("policy-distill.record")
DEFAULT_TEACHER = "models/ant_teacher"
DEFAULT_PARAMS = "config/teacher.yaml"
DEFAULT_SIM_CONFIG = "config/sim.yaml"
DEFAULT_STUDENT_SPEC = "config/specs/ant_student.yaml"
SIM, TEACHER, RECORDER, MONITOR, STUDENT = ("sim_node", "teacher_node", "recorder_node",
                                           "timing_monitor_node", "student_node")
SIM_TOPICS = [JOINT_STATES, IMU, ODOMETRY, CONTACT_FORCES, DYNAMICS, EPISODE]
READY_TIMEOUT_S = 60.0
SETTLE_S = 0.5          # after everything is subscribed, before releasing the simulator
DRAIN_S = 1.0           # after the simulator exits, before stopping the recorder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--teacher", default=DEFAULT_TEACHER,
                        help=f"teacher directory (default {DEFAULT_TEACHER}; "
                             "policy-distill import-teacher makes one)")
    parser.add_argument("--teacher-spec", default=None,
                        help="teacher spec YAML (default: the one stored with the teacher)")
    parser.add_argument("--episodes", type=int, default=10, help="episodes to record")
    parser.add_argument("--max-episode-steps", type=int, default=None,
                        help="override the sim config's episode length (short runs)")
    parser.add_argument("--out", default="bags",
                        help="directory for the new bag (rosbag2_<time>), or with --bag-name")
    parser.add_argument("--bag-name", default=None, help="bag directory name inside --out")
    parser.add_argument("--seed", type=int, default=0, help="simulator seed")
    parser.add_argument("--mode", choices=("drive", "label", "mix"), default=None,
                        help="teacher mode (default drive; label with --student)")
    parser.add_argument("--beta", type=float, default=0.0,
                        help="mix: probability that the teacher's action is executed")
    parser.add_argument("--student", default=None,
                        help="student .onnx for DAgger data: it drives (label) or proposes (mix)")
    parser.add_argument("--student-spec", default=DEFAULT_STUDENT_SPEC,
                        help="student spec recorded with the data (default: the --student "
                             f"model's, else {DEFAULT_STUDENT_SPEC})")
    parser.add_argument("--lockstep-timeout-s", type=float, default=10.0,
                        help="the simulator re-sends a frame unanswered this long (default 10)")
    parser.add_argument("--params-file", default=DEFAULT_PARAMS,
                        help="teacher_node, recorder_node, timing_monitor_node parameters")
    parser.add_argument("--sim-config", default=DEFAULT_SIM_CONFIG, help="sim_node parameters")
    parser.add_argument("--log-dir", default=None,
                        help="node logs here (default: a new temporary directory)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", default=None, help="write the figures here")


def _required(path: str, what: str) -> Path:
    found = resolve(path)
    if found is None:
        raise SystemExit(f"policy-distill record: {what} {path!r} not found")
    return found


def teacher_spec_yaml(teacher_dir: Path, spec_arg: str | None, workdir: Path) -> Path:
    """The teacher's spec as a YAML file (the recorder stores it verbatim, the monitor reads
    it): --teacher-spec, else the spec stored in teacher.json. Read without torch."""
    if spec_arg:
        return _required(spec_arg, "--teacher-spec")
    try:
        meta = json.loads((teacher_dir / "teacher.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SystemExit(f"policy-distill record: {teacher_dir}/teacher.json unreadable "
                         f"({exc})") from None
    spec = (meta.get("info") or {}).get("policy_spec")
    if spec is None:
        raise SystemExit(f"policy-distill record: {teacher_dir} stores no policy spec; give "
                         "--teacher-spec")
    path = workdir / "teacher_spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@dataclass
class Plan:
    teacher: Path
    mode: str
    bag_path: Path
    episodes: int
    max_episode_steps: int
    workdir: Path
    recorded_topics: list[str] = field(default_factory=list)
    processes: dict[str, NodeProcess] = field(default_factory=dict)
    # node name -> topics it must be subscribed to before the simulator may start
    subscribers: dict[str, list[str]] = field(default_factory=dict)


def plan_run(args: argparse.Namespace, workdir: Path) -> Plan:
    if args.episodes < 1:
        raise SystemExit("policy-distill record: --episodes must be >= 1")
    if args.max_episode_steps is not None and args.max_episode_steps < 1:
        raise SystemExit("policy-distill record: --max-episode-steps must be >= 1")
    if not args.lockstep_timeout_s > 0:
        raise SystemExit("policy-distill record: --lockstep-timeout-s must be > 0")
    if not 0.0 <= args.beta <= 1.0:
        raise SystemExit("policy-distill record: --beta must be in [0, 1]")
    mode = args.mode or ("label" if args.student else "drive")
    if mode in ("label", "mix") and not args.student:
        raise SystemExit(f"policy-distill record: --mode {mode} needs --student (someone else "
                         "must drive)")
    if mode == "drive" and args.student:
        raise SystemExit("policy-distill record: --student drives the robot: use --mode label "
                         "or --mode mix")
    teacher = resolve(args.teacher + "/teacher.json")
    if teacher is None:
        raise SystemExit(f"policy-distill record: no teacher at {args.teacher!r} (a directory "
                         "with model.safetensors + teacher.json; policy-distill import-teacher "
                         "makes one)")
    teacher = teacher.parent
    params_file = _required(args.params_file, "--params-file")
    sim_file = _required(args.sim_config, "--sim-config")
    spec_path = teacher_spec_yaml(teacher, args.teacher_spec, workdir)
    out = Path(args.out)
    bag_path = out / args.bag_name if args.bag_name else \
        out / time.strftime("rosbag2_%Y_%m_%d-%H_%M_%S")
    if bag_path.exists():
        raise SystemExit(f"policy-distill record: {bag_path} already exists")
    out.mkdir(parents=True, exist_ok=True)

    # Every node is subscribed before the first frame, so the lockstep re-send only guards
    # against a lost message; a short timeout would re-send a frame a loaded teacher is still
    # computing, and its two answers would step the simulator twice.
    sim = dict(node_params(sim_file, SIM), mode="lockstep", num_episodes=args.episodes,
               seed=args.seed, paused=True, publish_privileged=True,
               lockstep_timeout_s=args.lockstep_timeout_s)
    if args.max_episode_steps is not None:
        sim["max_episode_steps"] = args.max_episode_steps
    # The policies read input ages on the wall clock: in lockstep a frame's messages arrive
    # together, while /clock reaches a busy node in bursts (sim-time ages jump by many steps).
    # Their stamps (the stamp rule) are the simulator's header stamps either way.
    # A frame's messages are sent together: an age limit below the re-send timeout would only
    # measure CPU load (a fallback then replaces a demonstration).
    teacher_params = dict(node_params(params_file, TEACHER), teacher_path=str(teacher),
                          mode=mode, beta=args.beta, seed=args.seed, use_sim_time=False,
                          max_input_age_s=2.0 * args.lockstep_timeout_s,
                       enforcement_wait_s=0.0)   # the recording's monitor only reports
    if args.teacher_spec:
        teacher_params["spec_path"] = str(spec_path)
    recorder = node_params(params_file, RECORDER)
    topics = list(recorder.get("topics") or SIM_TOPICS + [POLICY_COMMAND, POLICY_ACTION,
                                                         "teacher_label"])
    if mode == "mix" and "student/policy_action" not in topics:
        topics.append("student/policy_action")
    student_spec = None
    if args.student:
        student_spec = _required(args.student, "--student")
    recorder.update(topics=topics, bag_path=str(bag_path), teacher_path=str(teacher),
                    teacher_spec_path=str(spec_path))
    if args.student or args.student_spec:
        recorder["student_spec_path"] = str(student_spec_file(args, workdir))
    driver = STUDENT if args.student else TEACHER
    monitor = dict(node_params(params_file, MONITOR), spec_path=str(spec_path),
                   use_sim_time=True, student_node=driver)

    plan = Plan(teacher, mode, bag_path, args.episodes,
                int(sim.get("max_episode_steps", 1000)), workdir, topics)

    def log(name: str) -> str:
        return str(workdir / f"{name}.log")

    plan.processes[RECORDER] = NodeProcess("recorder_node", RECORDER, recorder,
                                           log_path=log(RECORDER))
    plan.processes[MONITOR] = NodeProcess("timing_monitor_node", MONITOR, monitor,
                                          log_path=log(MONITOR))
    plan.processes[TEACHER] = NodeProcess("teacher_node", TEACHER, teacher_params,
                                          log_path=log(TEACHER))
    from policy_distill_ros.core.spec import load_policy_spec
    teacher_inputs = list(load_policy_spec(spec_path).observation.topics) + ["episode"]
    known = set(SIM_TOPICS) | {POLICY_COMMAND, POLICY_ACTION} | (
        {"teacher_label"} if mode != "drive" else set()) | (
        {"student/policy_action"} if mode == "mix" else set())
    plan.subscribers = {RECORDER: [t for t in topics if t in known],
                        TEACHER: teacher_inputs}
    if args.student:
        student = dict(node_params(params_file, STUDENT), model_path=str(student_spec),
                       trigger="on_message", trigger_topic="joint_states",
                       episode_topic="episode", use_sim_time=False, autostart=True,
                       max_input_age_s=2.0 * args.lockstep_timeout_s,
                       enforcement_wait_s=0.0)   # the recording's monitor only reports
        remap = ("-r", "policy_command:=student/policy_command",
                 "-r", "policy_action:=student/policy_action") if mode == "mix" else ()
        plan.processes[STUDENT] = NodeProcess("student_node", STUDENT, student,
                                              ros_args=remap, log_path=log(STUDENT))
        plan.subscribers[STUDENT] = ["joint_states", "imu"]
    plan.processes[SIM] = NodeProcess("sim_node", SIM, sim, log_path=log(SIM))
    return plan


def student_spec_file(args: argparse.Namespace, workdir: Path) -> Path:
    """The student spec recorded with the data: the --student model's own, else --student-spec."""
    if args.student:
        from policy_distill_ros.core.policy_file import read_metadata
        path = workdir / "student_spec.yaml"
        path.write_text(read_metadata(_required(args.student, "--student")).spec.to_yaml())
        return path
    return _required(args.student_spec, "--student-spec")


class EpisodeListener(CliPeer):
    """Watches `episode` for progress, checks the graph, releases the paused simulator."""

    def __init__(self) -> None:
        from std_msgs.msg import Float64MultiArray

        from policy_distill_ros.nodes.ros_common import COMMAND_QOS

        super().__init__("policy_distill_record")
        self.node.create_subscription(Float64MultiArray, "episode", self._on_episode,
                                      COMMAND_QOS)
        self.frames = 0
        self.finished: list[tuple] = []    # (episode_id, steps, return, terminated)
        self.last: dict | None = None

    def _on_episode(self, msg) -> None:
        values = dict(zip(EPISODE_LABELS, msg.data, strict=False))
        if self.last is not None and values == self.last:
            return   # a re-published frame (lockstep timeout)
        self.last = values
        self.frames += 1
        if values["terminated"] or values["truncated"]:
            self.finished.append((int(values["episode_id"]), int(values["step"]),
                                  values["episode_return"], bool(values["terminated"])))

    def subscribed(self, node_name: str, topic: str) -> bool:
        topic = "/" + topic.lstrip("/")
        return any(info.node_name == node_name
                   for info in self.node.get_subscriptions_info_by_topic(topic))

    def release_sim(self, timeout_s: float = 10.0) -> None:
        from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
        from rcl_interfaces.srv import SetParameters
        client = self.node.create_client(SetParameters, f"/{SIM}/set_parameters")
        deadline = time.monotonic() + timeout_s
        while not client.service_is_ready():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{SIM}/set_parameters not available")
            self.spin_for(0.05)
        request = SetParameters.Request(parameters=[Parameter(
            name="paused", value=ParameterValue(type=ParameterType.PARAMETER_BOOL,
                                                bool_value=False))])
        future = client.call_async(request)
        while not future.done():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{SIM} did not answer the request to start")
            self.spin_for(0.05)
        self.node.destroy_client(client)



def _check_children(plan: Plan, except_sim: bool = False) -> None:
    for name, proc in plan.processes.items():
        if except_sim and name == SIM:
            continue
        if not proc.alive():
            raise RuntimeError(f"{name} exited with code {proc.proc.returncode}; its log: "
                               f"{proc.log_path}\n{proc.read_log()[-2000:]}")


def wait_ready(plan: Plan, listener: EpisodeListener) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        _check_children(plan)
        missing = [f"{node} on {topic}" for node, topics in plan.subscribers.items()
                   for topic in topics if not listener.subscribed(node, topic)]
        if not missing:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"not subscribed after {READY_TIMEOUT_S:g} s: "
                               f"{', '.join(missing)}; logs in {plan.workdir}")
        listener.spin_for(0.1)
    listener.spin_for(SETTLE_S)


def record(plan: Plan, listener: EpisodeListener, progress: bool) -> float:
    """Run until the simulator exits; returns the wall time of the stepping phase."""
    from tqdm import tqdm
    total = plan.episodes * (plan.max_episode_steps + 1)   # frames, terminal ones included
    bar = tqdm(total=total, unit="step", disable=not progress, desc="recording")
    started = time.monotonic()
    listener.release_sim()
    sim = plan.processes[SIM]
    try:
        while sim.alive():
            _check_children(plan, except_sim=True)
            listener.spin_for(0.1)
            done = len(listener.finished)
            # an episode that ended early jumps the bar to its boundary
            position = done * (plan.max_episode_steps + 1) + (
                listener.last["step"] + 1 if listener.last and not (
                    listener.last["terminated"] or listener.last["truncated"]) else 0)
            bar.update(max(0, min(total, position) - bar.n))
            bar.set_postfix(episodes=f"{done}/{plan.episodes}")
        elapsed = time.monotonic() - started
        if sim.proc.returncode != 0:
            raise RuntimeError(f"{SIM} exited with code {sim.proc.returncode}; log "
                               f"{sim.log_path}\n{sim.read_log()[-2000:]}")
        bar.update(total - bar.n)
    finally:
        bar.close()
    listener.spin_for(DRAIN_S)
    return elapsed


@dataclass
class EpisodeFigures:
    episode_id: int
    steps: int
    episode_return: float
    forward_distance_m: float
    terminated: bool


def read_back(bag_path: Path) -> tuple:
    """(BagInfo, [EpisodeFigures], steps_per_s) from the recorded bag alone."""
    from policy_distill_ros.recording.bag_reader import bag_info, read_bag
    info = bag_info(str(bag_path))
    x_by_stamp: dict[int, float] = {}
    episodes: dict[int, dict] = {}
    log_times: list[int] = []
    for item in read_bag(str(bag_path), ["/episode", "/privileged/odometry"]):
        msg = item.message
        if item.topic.endswith("odometry"):
            x_by_stamp[header_stamp_ns(msg)] = float(msg.pose.pose.position.x)
            continue
        labels = layout_labels(msg) or EPISODE_LABELS
        v = dict(zip(labels, msg.data, strict=False))
        log_times.append(item.log_time_ns)
        ep = episodes.setdefault(int(v["episode_id"]), {"first_stamp": v["stamp_s"]})
        ep.update(last_stamp=v["stamp_s"], steps=int(v["step"]), ret=v["episode_return"],
                  terminated=bool(v["terminated"]), done=bool(v["terminated"] or v["truncated"]))

    def x_at(stamp_s: float) -> float:
        # stamp_s is the float the simulator stamped its messages from: same rounding, exact
        return x_by_stamp.get(s_to_ns(stamp_s), math.nan)

    figures = [EpisodeFigures(eid, ep["steps"], ep["ret"],
                              x_at(ep["last_stamp"]) - x_at(ep["first_stamp"]), ep["terminated"])
               for eid, ep in sorted(episodes.items()) if ep.get("done")]
    steps_per_s = math.nan
    if len(log_times) > 1 and log_times[-1] > log_times[0]:
        steps_per_s = (len(log_times) - 1) / ns_to_s(log_times[-1] - log_times[0])
    return info, figures, steps_per_s


def record_with(plan: Plan, progress: bool) -> float:
    """Start every child, wait until they are subscribed, record; always stop them, by pid."""
    listener: EpisodeListener | None = None
    try:
        listener = EpisodeListener()
        for name, proc in plan.processes.items():
            proc.start()
            LOG.info("started %s (pid %d), log %s", name, proc.pid, proc.log_path)
        wait_ready(plan, listener)
        LOG.info("every node subscribed; releasing the simulator")
        return record(plan, listener, progress)
    finally:
        # policies first (nothing left to command), the recorder last so it keeps every message
        for name in (SIM, STUDENT, TEACHER, MONITOR, RECORDER):
            if name in plan.processes:
                plan.processes[name].stop()
        if listener is not None:
            listener.close()


def run(args: argparse.Namespace) -> int:
    workdir = log_directory(args.log_dir, "policy_distill_record_")
    plan = plan_run(args, workdir)
    with sigterm_as_interrupt():
        elapsed_s = record_with(plan, not args.no_progress)
    info, episodes, steps_per_s = read_back(plan.bag_path)
    print(f"\nbag {plan.bag_path.resolve()}  ({info.message_count} messages, "
          f"{'complete' if info.complete else 'INCOMPLETE: ' + '; '.join(info.problems)})")
    width = max(len(t) for t in info.topics) if info.topics else 10
    for topic, t in sorted(info.topics.items()):
        print(f"  {topic:<{width}}  {t.message_count:>7d}  {t.msgtype}")
    missing = [t for t in plan.recorded_topics if "/" + t.lstrip("/") not in info.topics
               and not (t == "teacher_label" and plan.mode == "drive")]
    if missing:
        LOG.warning("requested but not recorded: %s", ", ".join(missing))
    print(f"\nteacher {plan.teacher} (sha256 {info.custom_data.get('teacher_sha256', '?')[:12]}"
          f"...), mode {plan.mode}")
    for ep in episodes:
        print(f"  episode {ep.episode_id}: {ep.steps:4d} steps, return {ep.episode_return:8.1f}, "
              f"forward {ep.forward_distance_m:+.2f} m{' (fell)' if ep.terminated else ''}")
    returns = [e.episode_return for e in episodes]
    distances = [e.forward_distance_m for e in episodes]
    if episodes:
        print(f"  mean return {sum(returns) / len(returns):.1f}, mean forward distance "
              f"{sum(distances) / len(distances):+.2f} m over {len(episodes)} episode(s)")
    print(f"lockstep: {steps_per_s:.1f} steps/s through sim -> teacher -> sim (+ recorder), "
          f"{elapsed_s:.1f} s wall\nlogs: {workdir}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "bag": str(plan.bag_path), "mode": plan.mode, "teacher": str(plan.teacher),
            "teacher_sha256": info.custom_data.get("teacher_sha256"),
            "message_counts": {k: v.message_count for k, v in info.topics.items()},
            "episodes": [e.__dict__ for e in episodes], "steps_per_s": steps_per_s,
            "wall_s": elapsed_s, "log_dir": str(workdir)}, indent=2) + "\n")
    ok = info.complete and len(episodes) == args.episodes
    if not ok:
        LOG.error("expected %d finished episodes in a complete bag, got %d (%s)", args.episodes,
                  len(episodes), "complete" if info.complete else "incomplete")
    return 0 if ok else 1

