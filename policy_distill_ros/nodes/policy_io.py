"""ROS glue shared by the policy nodes (student, teacher): inputs in, command + stamped echo out.

Only adapts messages; the meaning of every number (which field, which joint, scaling, history)
lives in `core/`. Subscription callbacks here only store the newest message, so a control loop
on another thread never waits for, or races with, message parsing.
"""
from __future__ import annotations

import array
import contextlib
import math
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from geometry_msgs.msg import TwistStamped
from nav_msgs.msg import Odometry
from rclpy.callback_groups import CallbackGroup
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile
from sensor_msgs.msg import Imu, JointState
from std_msgs.msg import Float64MultiArray, MultiArrayDimension

from policy_distill_ros.core.episode import EpisodeBoundary
from policy_distill_ros.nodes.ros_common import COMMAND_QOS, SENSOR_QOS, stamp_to_s

# The message types an observation term may read (standard types only, see docs/contracts.md).
MESSAGE_TYPES: Dict[str, type] = {
    "sensor_msgs/msg/JointState": JointState,
    "sensor_msgs/msg/Imu": Imu,
    "geometry_msgs/msg/TwistStamped": TwistStamped,
    "nav_msgs/msg/Odometry": Odometry,
    "std_msgs/msg/Float64MultiArray": Float64MultiArray,
}

# Topic (or last path component of a topic) -> type, from the topic table in docs/contracts.md.
DEFAULT_TOPIC_TYPES: Dict[str, str] = {
    "joint_states": "sensor_msgs/msg/JointState",
    "imu": "sensor_msgs/msg/Imu",
    "command": "geometry_msgs/msg/TwistStamped",
    "odometry": "nav_msgs/msg/Odometry",
    "contact_forces": "std_msgs/msg/Float64MultiArray",
    "dynamics": "std_msgs/msg/Float64MultiArray",
}

FALLBACK_MODES = ("hold_default", "zero", "last_safe")
# The timing monitor's enforcement state (std_msgs/String, latched): the student withholds its
# commands while it is not "nominal" (core.enforcement, docs/enforcement.md).
ENFORCEMENT_TOPIC = "policy_enforcement"


def parse_topic_types(entries: Sequence[str]) -> Dict[str, str]:
    """`["front/imu=sensor_msgs/msg/Imu", ...]` (a string-array parameter) -> {topic: type name}."""
    table: Dict[str, str] = {}
    for entry in entries:
        topic, sep, type_name = entry.partition("=")
        topic, type_name = topic.strip(), _normalize_type_name(type_name.strip())
        if not sep or not topic or not type_name:
            raise ValueError(f"topic_types entry {entry!r}: expected 'topic=pkg/msg/Type'")
        if type_name not in MESSAGE_TYPES:
            raise ValueError(f"topic_types entry {entry!r}: type {type_name!r} is not one of "
                             f"{', '.join(sorted(MESSAGE_TYPES))}")
        table[topic] = type_name
    return table


def _normalize_type_name(name: str) -> str:
    """Accept `sensor_msgs/Imu` as well as `sensor_msgs/msg/Imu`."""
    parts = name.split("/")
    return f"{parts[0]}/msg/{parts[1]}" if len(parts) == 2 else name


def message_type_for(topic: str, overrides: Optional[Mapping[str, str]] = None) -> type:
    """The message class of an input topic: explicit override, else the contract's topic table.

    Matched on the full topic, then on its last path component, so `front/imu` is an Imu.
    """
    overrides = overrides or {}
    for key in (topic, topic.lstrip("/")):
        if key in overrides:
            return MESSAGE_TYPES[overrides[key]]
    base = topic.rstrip("/").rsplit("/", 1)[-1]
    type_name = DEFAULT_TOPIC_TYPES.get(topic.lstrip("/")) or DEFAULT_TOPIC_TYPES.get(base)
    if type_name is None:
        raise ValueError(f"input topic {topic!r}: message type unknown; add "
                         f"'{topic}=pkg/msg/Type' to the topic_types parameter (one of "
                         f"{', '.join(sorted(MESSAGE_TYPES))})")
    return MESSAGE_TYPES[type_name]


@dataclass
class StoredInput:
    """The newest message of one topic and when it arrived (node clock, seconds)."""

    msg: object
    receive_s: float
    seq: int


class InputCache:
    """Newest message per topic, written by subscription callbacks, read by the control loop.

    A callback does one dict assignment (atomic under the GIL); the loop takes what is new since
    its last look. No lock on the hot path; the sequence number tells new from already seen.
    """

    def __init__(self, topics: Iterable[str]) -> None:
        self._latest: Dict[str, Optional[StoredInput]] = {t: None for t in topics}
        self._seen: Dict[str, int] = {t: 0 for t in self._latest}
        self._seq = 0

    @property
    def topics(self) -> List[str]:
        return list(self._latest)

    def store(self, topic: str, msg: object, receive_s: float) -> None:
        self._seq += 1  # only the executor thread writes, so this counter needs no lock
        self._latest[topic] = StoredInput(msg, receive_s, self._seq)

    def take_new(self) -> List[Tuple[str, StoredInput]]:
        """Entries stored since the previous call, oldest arrival first."""
        fresh = []
        for topic, entry in list(self._latest.items()):
            if entry is not None and entry.seq != self._seen[topic]:
                self._seen[topic] = entry.seq
                fresh.append((topic, entry))
        fresh.sort(key=lambda item: item[1].seq)
        return fresh

    def clear(self) -> None:
        for topic in self._latest:
            self._latest[topic] = None
            self._seen[topic] = 0


def subscribe_inputs(node: Node, topics: Iterable[str], on_message: Callable[[str, object], None],
                     type_overrides: Optional[Mapping[str, str]] = None,
                     callback_group=None) -> list:
    """One best-effort keep-last-1 subscription per input topic (relative names: remappable).

    `on_message(topic, msg)` is called from the executor. Types come from `message_type_for`, so
    an unknown topic fails here, at configure time, with the fix in the message.
    """
    subscriptions = []
    for topic in topics:
        msg_type = message_type_for(topic, type_overrides)
        subscriptions.append(node.create_subscription(
            msg_type, topic, _bind(on_message, topic), SENSOR_QOS,
            callback_group=callback_group))
    return subscriptions


def _bind(on_message: Callable[[str, object], None], topic: str) -> Callable[[object], None]:
    return lambda msg: on_message(topic, msg)


def header_stamp_s(msg: object) -> Optional[float]:
    """Seconds of `msg.header.stamp`, or None for messages without a header."""
    header = getattr(msg, "header", None)
    return None if header is None else stamp_to_s(header.stamp)


def twist_command(msg: TwistStamped) -> np.ndarray:
    """The usual legged-robot velocity command [v_x, v_y, yaw_rate] from a TwistStamped."""
    twist = msg.twist
    return np.array([twist.linear.x, twist.linear.y, twist.angular.z], dtype=np.float64)


class _PatchedMessage:
    """A message serialized once; per publish only numbers at fixed byte offsets change.

    rclpy's message conversion (Python object -> C struct -> CDR) costs ~15 us for a JointState
    of 12 joints; patching a preallocated CDR buffer and publishing the bytes costs ~4 us. The
    offsets are found by serializing sentinel values, and checked once by deserializing.
    """

    SENTINEL_SEC, SENTINEL_NANOSEC = 0x5A5C3E1F, 987_654_321

    def __init__(self, msg, values_attr: str, size: int, stamped: bool) -> None:
        from rclpy.serialization import deserialize_message, serialize_message
        sentinel = 1234.5678901234 + np.arange(size, dtype=np.float64) * 1e-3
        setattr(msg, values_attr, sentinel.tolist())
        if stamped:
            msg.header.stamp.sec, msg.header.stamp.nanosec = self.SENTINEL_SEC, \
                self.SENTINEL_NANOSEC
        self._buffer = bytearray(serialize_message(msg))
        self._values = np.frombuffer(self._buffer, dtype="<f8", count=size,
                                     offset=_unique_offset(self._buffer, sentinel.astype("<f8")))
        self._stamp = np.frombuffer(self._buffer, dtype="<u4", count=2, offset=_unique_offset(
            self._buffer, np.array([self.SENTINEL_SEC, self.SENTINEL_NANOSEC], "<u4"))) \
            if stamped else None
        probe = np.linspace(-1.0, 1.0, size)
        data = self.fill(probe, 7, 11)
        back = deserialize_message(data, type(msg))
        if not np.array_equal(np.asarray(getattr(back, values_attr)), probe) or (
                stamped and (back.header.stamp.sec, back.header.stamp.nanosec) != (7, 11)):
            raise LookupError("patched message does not deserialize to the patched values")

    def fill(self, values: np.ndarray, sec: int = 0, nanosec: int = 0) -> bytes:
        self._values[:] = values
        if self._stamp is not None:
            self._stamp[0], self._stamp[1] = sec, nanosec
        return bytes(self._buffer)


def _unique_offset(buffer: bytearray, values: np.ndarray) -> int:
    pattern = values.tobytes()
    at = buffer.find(pattern)
    if at < 0 or buffer.find(pattern, at + 1) >= 0:
        raise LookupError("sentinel not found exactly once in the serialized message")
    return at


class ActionPublisher:
    """Publishes `policy_command` (Float64MultiArray) and its stamped echo `policy_action`.

    The stamp rule: the echo's `header.stamp` is the stamp of the newest observation that
    produced the command, so `now - echo.stamp` is the sensor-to-action latency. Messages are
    serialized once; per tick only the numbers change (`_PatchedMessage`; rclpy message objects
    where serialized publishing is unavailable). A non-finite command is refused here, the last
    line of defence, so no NaN ever leaves a policy node. `withheld=True` (the timing monitor
    commands the fallback meanwhile, core.enforcement): only the echo goes out, flagged
    `withheld` (`withheld,fallback` when the input was bad), so the monitor still times the
    policy without two commanders on the topic.
    """

    FALLBACK_FRAME = "fallback"
    WITHHELD_FRAME = "withheld"
    WITHHELD_FALLBACK_FRAME = "withheld,fallback"

    def __init__(self, node: Node, joint_names: Sequence[str],
                 command_topic: str = "policy_command", echo_topic: str = "policy_action") -> None:
        self._names = list(joint_names)
        self._size = len(self._names)
        self._command_pub = node.create_publisher(Float64MultiArray, command_topic, COMMAND_QOS)
        self._echo_pub = node.create_publisher(JointState, echo_topic, COMMAND_QOS)
        self._command = Float64MultiArray()
        self._command.layout.dim = [MultiArrayDimension(label=",".join(self._names),
                                                        size=self._size, stride=self._size)]
        self._echo = JointState()
        self._echo.name = list(self._names)
        self._values = np.zeros(self._size, dtype=np.float64)
        self._ones = np.ones(self._size, dtype=np.float64)
        self._node = node
        try:
            self._patched = (_PatchedMessage(self._command, "data", self._size, False),
                             _PatchedMessage(self._echo, "position", self._size, True),
                             _PatchedMessage(self._flagged_echo(self.FALLBACK_FRAME), "position",
                                             self._size, True),
                             _PatchedMessage(self._flagged_echo(self.WITHHELD_FRAME), "position",
                                             self._size, True),
                             _PatchedMessage(self._flagged_echo(self.WITHHELD_FALLBACK_FRAME),
                                             "position", self._size, True))
        except (ImportError, AttributeError, TypeError, LookupError):
            self._patched = None  # message objects below: slower, same bytes on the wire

    def _flagged_echo(self, frame_id: str) -> JointState:
        echo = JointState(name=list(self._names))
        echo.header.frame_id = frame_id
        return echo

    def publish(self, command: np.ndarray, stamp, fallback: bool = False,
                withheld: bool = False) -> None:
        """`stamp`: the input's own builtin_interfaces/Time (copied exactly, so echoes join
        inputs by exact stamp), or float seconds when there is no input message."""
        values = self._values
        try:
            values[:] = command
        except ValueError:
            raise ValueError(f"command has {np.size(command)} values, action spec has "
                             f"{self._size} joints") from None
        if not math.isfinite(values @ self._ones):  # one reduction; NaN/Inf propagate
            raise ValueError("refusing to publish a non-finite command")
        if isinstance(stamp, float):
            sec = int(stamp // 1)
            nanosec = min(int(round((stamp - sec) * 1e9)), 999_999_999)
        else:
            sec, nanosec = stamp.sec, stamp.nanosec
        if self._patched is not None:
            command_msg, echo, fallback_echo, withheld_echo, withheld_fallback = self._patched
            if not withheld:
                self._command_pub.publish(command_msg.fill(values))
                echo = fallback_echo if fallback else echo
            else:
                echo = withheld_fallback if fallback else withheld_echo
            self._echo_pub.publish(echo.fill(values, sec, nanosec))
            return
        data = array.array("d", values.tobytes())
        self._command.data = data
        self._echo.header.stamp.sec, self._echo.header.stamp.nanosec = sec, nanosec
        self._echo.header.frame_id = echo_frame(fallback, withheld)
        self._echo.position = data
        if not withheld:
            self._command_pub.publish(self._command)
        self._echo_pub.publish(self._echo)

    def destroy(self) -> None:
        self._node.destroy_publisher(self._command_pub)
        self._node.destroy_publisher(self._echo_pub)


def echo_frame(fallback: bool, withheld: bool) -> str:
    """The echo's frame_id: "" (the policy's command, published), "fallback" (the node's own
    fallback, published), "withheld" / "withheld,fallback" (not published: the timing
    monitor commands meanwhile)."""
    if withheld:
        return ActionPublisher.WITHHELD_FALLBACK_FRAME if fallback else \
            ActionPublisher.WITHHELD_FRAME
    return ActionPublisher.FALLBACK_FRAME if fallback else ""


class FallbackCommand:
    """The command sent when the policy cannot be trusted this tick.

    hold_default: the action spec's default pose; zero: all zeros (clipped to the limits);
    last_safe: the last command the policy produced from good input (default pose before any).
    """

    def __init__(self, mode: str, default_pose: np.ndarray, lower: Optional[np.ndarray] = None,
                 upper: Optional[np.ndarray] = None) -> None:
        if mode not in FALLBACK_MODES:
            raise ValueError(f"fallback_mode {mode!r}: expected one of {', '.join(FALLBACK_MODES)}")
        self.mode = mode
        self._default = np.asarray(default_pose, dtype=np.float64).copy()
        self._lower = None if lower is None else np.asarray(lower, dtype=np.float64)
        self._upper = None if upper is None else np.asarray(upper, dtype=np.float64)
        self._last_safe: Optional[np.ndarray] = None
        self._lock = threading.Lock()

    def remember_safe(self, command: np.ndarray) -> None:
        """Every tick with a good command; kept only in last_safe mode (the hot path)."""
        if self.mode != "last_safe":
            return
        with self._lock:
            if self._last_safe is None:
                self._last_safe = np.array(command, dtype=np.float64)
            else:
                self._last_safe[:] = command

    def command(self) -> np.ndarray:
        if self.mode == "zero":
            value = np.zeros_like(self._default)
        elif self.mode == "last_safe":
            with self._lock:
                value = self._default if self._last_safe is None else self._last_safe
        else:
            value = self._default
        if self._lower is not None and self._upper is not None:
            value = np.clip(value, self._lower, self._upper)
        return np.array(value, dtype=np.float64)


class HotPathLog:
    """A node logger for threads with a deadline: `.error(text)`, `.warning(text)`, `.info(text)`.

    rclpy's logger methods resolve their caller first (inspect.getframeinfo: source file stats
    and reads), measured at 3.5 ms per line on the 2-core dev machine under load; this hands the
    line straight to rcutils (console, /rosout) in ~20 us, with the node's logger name and
    level. Where that binding differs, the public methods are used.
    """

    def __init__(self, logger) -> None:
        from rclpy.logging import LoggingSeverity
        self._logger = logger
        self._severity = LoggingSeverity
        try:
            from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
            self._emit = _rclpy.rclpy_logging_rcutils_log
        except (ImportError, AttributeError):
            self._emit = None

    def _log(self, severity, text: str) -> bool:
        emit = self._emit
        if emit is None:
            return False
        try:
            if self._logger.is_enabled_for(severity):
                emit(severity, self._logger.name, text, "hot_path", __file__, 0)
            return True
        except (TypeError, AttributeError, ValueError):
            self._emit = None
            return False

    def error(self, text: str) -> None:
        if not self._log(self._severity.ERROR, text):
            self._logger.error(text)

    def warning(self, text: str) -> None:
        if not self._log(self._severity.WARN, text):
            self._logger.warning(text)

    def info(self, text: str) -> None:
        if not self._log(self._severity.INFO, text):
            self._logger.info(text)


class LogThrottle:
    """At most one log line per `period_s` from a hot path: `if throttle.due(): logger.error(..)`.

    Not rclpy's `throttle_duration_sec`: rclpy resolves the caller (inspect.getframeinfo, which
    stats and reads source files) on every call before deciding to skip it, measured at 0.1 to
    7 ms per suppressed call on the 2-core dev machine. Here a skipped call is one clock read;
    `suppressed` counts what was not logged since the last line.
    """

    def __init__(self, period_s: float = 1.0) -> None:
        if not period_s > 0:
            raise ValueError(f"LogThrottle period_s must be > 0, got {period_s!r}")
        self.period_s = float(period_s)
        self._next_s = -math.inf
        self.suppressed = 0

    def due(self) -> bool:
        now = time.monotonic()
        if now < self._next_s:
            self.suppressed += 1
            return False
        self._next_s = now + self.period_s
        self.suppressed = 0
        return True


class LoopServed(CallbackGroup):
    """The callback group of entities a `TakeLoop` serves on a node that an executor also spins:
    the executor leaves them out of its wait set and never runs them (`can_execute` False), so
    they can live on the node users address (`ros2 node info` lists them) at no cost to it.
    `executor_serves()` hands them back to the node's executor (no wait-set binding)."""

    def __init__(self) -> None:
        super().__init__()
        self.loop_serves = True

    def executor_serves(self) -> None:
        self.loop_serves = False

    def can_execute(self, entity) -> bool:
        return not self.loop_serves

    def beginning_execution(self, entity) -> bool:
        return not self.loop_serves

    def ending_execution(self, entity) -> None:
        pass


class TakeLoop:
    """Serves a few subscriptions from one dedicated thread: wait, take, call the handler.

    Uses rclpy's wait-set binding directly (as `rclpy.wait_for_message` does) instead of an
    executor, which rebuilds its wait set in Python over every entity on each wake-up. The
    handlers are the subscriptions' own callbacks, so where the binding differs the loop falls
    back to a SingleThreadedExecutor over `node` with identical behaviour. Subscriptions are
    served in the given order when several are ready at once.

    `group`: the subscriptions belong to a node spun by another executor (see `LoopServed`);
    without the binding that executor then serves them itself and this loop starts no thread.

    `periodic=(period_s, callback)`: also call `callback()` on this thread every period_s
    (monotonic, missed periods skipped), always after taking every message that has arrived,
    so a watchdog never reports a silence while the messages that end it wait unread.
    """

    WAIT_TIMEOUT_NS = 100_000_000

    def __init__(self, node: Node, subscriptions: Sequence, name: str,
                 periodic: Optional[Tuple[float, Callable[[], None]]] = None,
                 group: Optional[LoopServed] = None) -> None:
        self.node = node
        self.subscriptions = list(subscriptions)
        self._periodic = periodic
        if periodic is not None and not periodic[0] > 0:
            raise ValueError(f"TakeLoop periodic period must be > 0 s, got {periodic[0]!r}")
        self._stop = threading.Event()
        self._error_log = LogThrottle()
        self._log = HotPathLog(node.get_logger())
        self._executor: Optional[SingleThreadedExecutor] = None
        self._wake = None
        target = None
        try:
            from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
            self._wait_set = _rclpy.WaitSet(len(self.subscriptions), 1, 0, 0, 0, 0,
                                            node.context.handle)
            self._wake = node.create_guard_condition(lambda: None, callback_group=group)
            target = self._wait_loop
        except (ImportError, AttributeError, TypeError):
            if group is not None:
                group.executor_serves()
                if periodic is not None:
                    node.create_timer(periodic[0], periodic[1], callback_group=group)
            else:
                self._executor = SingleThreadedExecutor(context=node.context)
                self._executor.add_node(node)
                if periodic is not None:
                    node.create_timer(periodic[0], periodic[1])
                target = self._executor_loop
        self._thread = None if target is None else threading.Thread(target=target, daemon=True,
                                                                    name=name)

    def start(self) -> "TakeLoop":
        if self._thread is not None:
            self._thread.start()
        return self

    def _wait_loop(self) -> None:
        subs, wait_set, stop = self.subscriptions, self._wait_set, self._stop
        served = [(sub.handle, sub.msg_type, sub.raw, sub.callback) for sub in subs]
        with_info = {id(sub.callback) for sub in subs if _takes_message_info(sub.callback)}
        period_s, periodic = self._periodic if self._periodic is not None else (None, None)
        next_due = time.monotonic() + period_s if period_s else math.inf
        timeout_ns = self.WAIT_TIMEOUT_NS
        try:
            with contextlib.ExitStack() as stack:  # handles stay valid while we wait on them
                for sub in subs:
                    stack.enter_context(sub.handle)
                stack.enter_context(self._wake.handle)
                while not stop.is_set():
                    wait_set.clear_entities()
                    for handle, _, _, _ in served:
                        wait_set.add_subscription(handle)
                    wait_set.add_guard_condition(self._wake.handle)
                    if period_s:
                        timeout_ns = max(0, int((next_due - time.monotonic()) * 1e9))
                    wait_set.wait(timeout_ns)
                    ready = wait_set.get_ready_entities("subscription")
                    for handle, msg_type, raw, callback in served:
                        if handle.pointer in ready:
                            taken = handle.take_message(msg_type, raw)
                            while taken is not None:  # everything queued, in order
                                if id(callback) in with_info:  # (msg, rmw message info)
                                    self._call(callback, taken[0], taken[1])
                                else:
                                    self._call(callback, taken[0])
                                taken = handle.take_message(msg_type, raw) if period_s else None
                    if period_s:
                        now = time.monotonic()
                        if now >= next_due:
                            self._call(periodic)
                            next_due += period_s
                            if next_due <= now:  # overran: skip, never burst
                                next_due = now + period_s
        except Exception:  # noqa: BLE001 - context shut down under us: nothing left to serve
            if not stop.is_set():
                raise

    def _call(self, callback: Callable, *args) -> None:
        """A handler's exception is logged (at most once a second), never ends the loop."""
        try:
            callback(*args)
        except Exception as exc:  # noqa: BLE001 - the hot path must outlive any bug
            if self._error_log.due():
                self._log.error(f"{self._thread.name}: {exc!r}")

    def _executor_loop(self) -> None:
        try:
            self._executor.spin()
        except Exception:  # noqa: BLE001 - context shut down under us: nothing left to serve
            pass

    def close(self) -> None:
        self._stop.set()
        if self._executor is not None:
            self._executor.shutdown(timeout_sec=1.0)
        elif self._wake is not None:
            self._wake.trigger()
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout=2.0)
        if self._wake is not None and self._executor is None:
            self.node.destroy_guard_condition(self._wake)
            self._wake = None


def _takes_message_info(callback: Callable) -> bool:
    """A callback written `(msg, info=None)` gets the rmw message info (source_timestamp, ...)
    from a TakeLoop; rclpy's executor calls it with the message alone."""
    import inspect
    try:
        inspect.signature(callback).bind(object(), object())
        return True
    except (TypeError, ValueError):
        return False


class PolicyIo:
    """A policy node's hot path (sensor subscriptions, command + echo publishers) on the policy
    node itself, served by a `TakeLoop` thread of its own instead of the node's executor.

    Why the thread: rclpy's executor rebuilds its wait set in Python on every wake-up, over
    every entity of the node; a lifecycle node with parameter and lifecycle services made each
    sensor message pay for ~15 idle services (profiled: the executor loop was the largest cost
    per message). Measured on the benchmark's relay (sensor -> echo, no compute, 500 Hz):
    executor p50/p99 0.58/0.96 ms, wait-set loop 0.50/0.82 ms. The loop waits on just these
    subscriptions; they belong to a `LoopServed` callback group, which the node's executor
    leaves out. So `ros2 node info <ns>/student_node` and rqt_graph show the sensor
    subscriptions and command publishers on the node users address. (They sat on a hidden
    helper node `_<name>_io` before; bench/student_latency.py on_message, A/B alternated:
    p50 0.65 ms and 550 us CPU per action there, 0.64 ms and 503 us here.)
    `events`: extra (topic, msg_type, qos, callback) subscriptions served on the same thread
    and before the sensors when both are ready (e.g. the simulator's `episode`, published
    before the sensors of the same step, so a reset is seen before that step's data).
    The executor keeps services, parameters and lifecycle, so a slow service call there (a model
    reload) never delays sensor callbacks. Relative topic names resolve like any of the node's
    (namespace, remaps). `sensor_qos`: a node that must see every message (the teacher
    labelling each frame) passes a deeper queue than the newest-only default.
    `decode_sensors`: JointState and Imu inputs are taken serialized and decoded by core.cdr
    (duck-typed messages; rclpy's deserializer when the bytes are not plain CDR), saving rclpy's
    object construction, the largest per-message cost left on the student's path.
    """

    def __init__(self, owner: Node, topics: Sequence[str],
                 on_message: Callable[[str, object], None], joint_names: Sequence[str],
                 type_overrides: Optional[Mapping[str, str]] = None,
                 events: Sequence[Tuple[str, type, object, Callable[[object], None]]] = (),
                 sensor_qos: QoSProfile = SENSOR_QOS, decode_sensors: bool = False) -> None:
        self.node = owner
        group = LoopServed()
        self.subscriptions = [
            owner.create_subscription(msg_type, topic, callback, qos, callback_group=group)
            for topic, msg_type, qos, callback in events]
        for topic in topics:
            msg_type = message_type_for(topic, type_overrides)
            callback = _bind(on_message, topic)
            decoder = _decoder_for(msg_type) if decode_sensors else None
            if decoder is not None:
                callback = _decoding(callback, decoder, msg_type)
            self.subscriptions.append(owner.create_subscription(
                msg_type, topic, callback, sensor_qos, raw=decoder is not None,
                callback_group=group))
        self.out = ActionPublisher(owner, joint_names)
        self._loop = TakeLoop(owner, self.subscriptions, f"{owner.get_name()}_io",
                              group=group).start()

    def close(self) -> None:
        self._loop.close()
        for subscription in self.subscriptions:
            self.node.destroy_subscription(subscription)
        self.subscriptions = []
        self.out.destroy()


def _decoder_for(msg_type: type) -> Optional[Callable[[bytes], object]]:
    from policy_distill_ros.core.cdr import DECODERS
    for name, cls in MESSAGE_TYPES.items():
        if cls is msg_type and name in DECODERS:
            return DECODERS[name]()
    return None


def _decoding(callback: Callable[[object], None], decoder: Callable[[bytes], object],
              msg_type: type) -> Callable[[bytes], None]:
    from rclpy.serialization import deserialize_message

    from policy_distill_ros.core.cdr import CdrError

    def on_raw(data: bytes) -> None:
        try:
            msg = decoder(data)
        except (CdrError, UnicodeDecodeError):
            msg = deserialize_message(data, msg_type)  # not plain CDR: rclpy knows them all
        callback(msg)
    return on_raw


def input_fault(obs, max_input_age_s: float) -> Optional[Tuple[str, str]]:
    """(kind, text) when an assembled observation must not be acted on: an input problem (NaN,
    wrong size, unknown joint, no message yet) or a topic older than `max_input_age_s`."""
    if obs.problem:
        return ("input", f"bad input: {obs.problem}")
    for topic, age_s in obs.ages_s.items():
        if age_s > max_input_age_s:
            return (f"stale:{topic}", f"stale input: '{topic}' is {age_s * 1e3:.1f} ms old "
                    f"(max_input_age_s {max_input_age_s:g})")
    return None


def log_fault_lines(logger, lines: Iterable[Tuple[str, str]]) -> None:
    """Emit core.faults.FaultTracker.update's (level, text) lines on a node logger."""
    for level, text in lines:
        if level == "error":  # two call sites: rclpy fixes a call site's severity
            logger.error(text)
        else:
            logger.info(text)


class InputStamps:
    """Header stamps of a policy node's inputs: the newest one as its own Time message (the
    stamp rule copies it exactly into the echo) and episode resets from stamps going back."""

    def __init__(self) -> None:
        self.episodes = EpisodeBoundary()
        self.newest = None   # (seconds, builtin_interfaces/Time)

    def on_message(self, topic: str, msg: object) -> Optional[str]:
        """Record `msg`'s stamp; a description when time went backwards (reset), else None."""
        stamp = header_stamp_s(msg)
        if stamp is None:
            return None
        jump = self.episodes.on_stamp(topic, stamp)
        if jump is not None:
            self.newest = None
        if self.newest is None or stamp >= self.newest[0]:
            self.newest = (stamp, msg.header.stamp)
        return jump
