"""rclpy glue shared by every node: parameter declaration, QoS profiles, stamps, `main` runner.

Kept tiny on purpose: logic lives in `core/`, this file only adapts it to ROS.
"""
from __future__ import annotations

import re
import signal
import sys
import traceback
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import rclpy
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.exceptions import InvalidParameterTypeException, ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)

from policy_distill_ros.core.contract import s_to_sec_nanosec, stamp_s

# Sensors: best effort, newest only. A RELIABLE subscriber never hears a BEST_EFFORT publisher,
# while a BEST_EFFORT subscriber hears both, so inputs are always subscribed best effort.
SENSOR_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                        reliability=ReliabilityPolicy.BEST_EFFORT,
                        durability=DurabilityPolicy.VOLATILE)
# Commands to ros2_control forward controllers: reliable, newest only (their default is reliable).
COMMAND_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                         reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)
# Events a late joiner must still see (model announcements, specs in use).
LATCHED_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                         reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)

__all__ = ["SENSOR_QOS", "COMMAND_QOS", "LATCHED_QOS", "qos_profile_sensor_data", "declare",
           "add_parameter_check", "warn_unknown_parameters", "stamp_to_s", "s_to_stamp",
           "spin_node", "log_fault_lines"]


# Integer parameters without an explicit bound get these (int32): `ros2 param describe` and
# rqt_reconfigure serialize the range, and a bound beyond int64 killed the node that described it.
INT_PARAM_MIN, INT_PARAM_MAX = -(2 ** 31), 2 ** 31 - 1
_IGNORED_OVERRIDES = frozenset({"use_sim_time", "start_type_description_service",
                                "qos_overrides"})


def require_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    """A node config's choice parameter, refused with one line naming it and the choices."""
    if value not in choices:
        raise ValueError(f"parameter '{name}' is {value!r}; expected one of {', '.join(choices)}")


def declare(node: Node, name: str, default: Any, description: str, *,
            read_only: bool = False, min_value: float | None = None,
            max_value: float | None = None, choices: Sequence[str] | None = None,
            check: Callable[[Any], str | None] | None = None) -> Any:
    """Declare a parameter with a descriptor (shown by `ros2 param describe`) and return its value.

    Ranges and read-only are enforced by rclpy itself; `choices` and `check` (value -> None, or
    the reason it is refused) are enforced here, at start-up with the allowed values in the
    message, and on every runtime change (`successful=False` with the reason, old value kept).
    """
    descriptor = ParameterDescriptor(description=description, read_only=read_only)
    if min_value is not None or max_value is not None:
        if isinstance(default, bool):
            pass
        elif isinstance(default, int):
            lo = INT_PARAM_MIN if min_value is None else max(INT_PARAM_MIN, int(min_value))
            hi = INT_PARAM_MAX if max_value is None else min(INT_PARAM_MAX, int(max_value))
            descriptor.integer_range = [IntegerRange(from_value=lo, to_value=hi, step=0)]
        else:
            lo = -1e300 if min_value is None else float(min_value)
            hi = 1e300 if max_value is None else float(max_value)
            descriptor.floating_point_range = [FloatingPointRange(from_value=lo, to_value=hi,
                                                                  step=0.0)]
    if choices:
        descriptor.additional_constraints = "one of: " + ", ".join(choices)
    value = node.declare_parameter(name, default, descriptor).value
    checks = []
    if choices:
        allowed = tuple(choices)
        checks.append(lambda v: None if v in allowed else
                      f"{v!r} is not one of {', '.join(allowed)}")
    if check is not None:
        checks.append(check)
    for one in checks:
        problem = one(value)
        if problem:
            raise ValueError(f"parameter '{name}' of node '{node.get_name()}': {problem}")
    _parameter_checks(node)[name] = checks
    return value


def add_parameter_check(node: Node, name: str, check: Callable[[Any], str | None]) -> None:
    """One more runtime check for a declared parameter (value -> None or the refusal reason)."""
    _parameter_checks(node).setdefault(name, []).append(check)


def _parameter_checks(node: Node) -> dict:
    """The node's checks by parameter name; the first call installs the on-set callback."""
    checks = getattr(node, "_pd_parameter_checks", None)
    if checks is None:
        checks = {}
        node._pd_parameter_checks = checks

        def on_set(params) -> SetParametersResult:
            for param in params:
                for one in checks.get(param.name, ()):
                    try:
                        problem = one(param.value)
                    except Exception as exc:  # noqa: BLE001 - a refusal, never a crash
                        problem = str(exc)
                    if problem:
                        return SetParametersResult(
                            successful=False, reason=f"parameter '{param.name}': {problem}")
            return SetParametersResult(successful=True)
        node.add_on_set_parameters_callback(on_set)
    return checks


def warn_unknown_parameters(node: Node) -> list:
    """One warning line per key given to `node` (params file, -p) that it does not declare:
    a typo must not be silently ignored. Call after every parameter is declared."""
    overrides = getattr(node, "_parameter_overrides", {}) or {}
    unknown = sorted(name for name in overrides
                     if not node.has_parameter(name) and name not in _IGNORED_OVERRIDES
                     and not name.startswith("qos_overrides."))
    for name in unknown:
        node.get_logger().warning(
            f"unknown parameter '{name}' given to node '{node.get_fully_qualified_name()}' is "
            f"ignored (its parameters: {', '.join(sorted(node._parameters))})")
    return unknown


stamp_to_s = stamp_s   # builtin_interfaces/Time -> float seconds (core.contract)


def s_to_stamp(seconds: float, stamp=None):
    """Seconds -> builtin_interfaces/Time (filled in place when `stamp` is given)."""
    from builtin_interfaces.msg import Time
    stamp = stamp if stamp is not None else Time()
    stamp.sec, stamp.nanosec = s_to_sec_nanosec(seconds)
    return stamp


# Without rclpy's C signal handler nothing wakes an idle executor on Ctrl-C: it waits at most this.
SIGNAL_POLL_S = 0.1


def spin_node(make_node: Callable[[], Node], args=None, executor=None) -> int:
    """Run a node until Ctrl-C, SIGTERM or external shutdown, then tear it down cleanly.

    Every node's `main` calls this so shutdown behaves the same everywhere: exit code 0, no
    traceback, no error line, once or twice (a launch sends SIGINT to the whole process group,
    a user may press Ctrl-C again). rclpy's own signal handlers are not installed: they shut
    the context down at once, under threads still publishing (a loop's tick, a log line to
    /rosout); here SIGINT / SIGTERM end the spin, `destroy_node` runs with the context still
    valid (it closes bags, stops loop threads) and further signals are ignored meanwhile. A node
    that cannot start because of its configuration (ValueError, OSError) gets one ERROR line
    with the reason and exit code 1.
    """
    from rclpy.signals import SignalHandlerOptions
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    node = None
    code = 0
    _raise_interrupt_on(signal.SIGTERM)
    try:
        node = make_node()
        executor = executor or SingleThreadedExecutor()
        executor.add_node(node)
        while node.context.ok():  # a bounded wait: Python runs the signal handler in between
            executor.spin_once(timeout_sec=SIGNAL_POLL_S)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except (ValueError, OSError, ParameterException) as exc:
        rclpy.logging.get_logger(_node_name_from(args) or "policy_distill_ros").error(
            f"cannot start: {_startup_problem(exc)}")
        code = 1
        if node is None:
            _destroy_partial_node(exc)
    finally:
        _ignore(signal.SIGINT)
        _ignore(signal.SIGTERM)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return code


def _startup_problem(exc: Exception) -> str:
    """One line for a start-up failure; a wrongly typed parameter says what it got, what it
    needs, and the usual fix (ROS reads `rate_hz:=500` as an integer)."""
    found = _WRONG_TYPE.search(str(exc)) if isinstance(exc, InvalidParameterTypeException) \
        else None
    if found is None:
        return str(exc)
    name, value, got, expected = found.groups()
    fix = f"; write {value}.0" if (got, expected) == ("INTEGER", "DOUBLE") else ""
    return f"parameter '{name}' is {value!r} ({got}), declared {expected}{fix}"


_WRONG_TYPE = re.compile(r"parameter '([^']+)' to '(.*)' of type '(\w+)', expecting type '(\w+)'")


def _destroy_partial_node(exc: Exception) -> None:
    """A node whose `__init__` raised is still tracked by the rclpy context, which would call its
    own `destroy_node` at shutdown on attributes never set (a second traceback). Destroy it as
    a plain Node here: it has nothing of its own to release yet."""
    for frame, _ in traceback.walk_tb(exc.__traceback__):
        partial = frame.f_locals.get("self")
        if isinstance(partial, Node):
            Node.destroy_node(partial)
            return


def _raise_interrupt_on(signum: int) -> None:
    """`signum` (SIGTERM) ends the spin as Ctrl-C does."""
    def interrupt(number, frame) -> None:
        raise KeyboardInterrupt
    try:
        signal.signal(signum, interrupt)
    except ValueError:  # not the main thread
        pass


def _ignore(signum: int) -> None:
    """A signal ignored from here on (the node is tearing down; the process exits after)."""
    try:
        signal.signal(signum, signal.SIG_IGN)
    except ValueError:  # not the main thread: nothing to protect
        pass


def _node_name_from(args) -> str | None:
    """The node name a failed constructor would have had: `__node:=` from the arguments."""
    for arg in (args if args is not None else sys.argv):
        if isinstance(arg, str) and arg.startswith("__node:="):
            return arg.split(":=", 1)[1]
    return None


def log_fault_lines(logger, lines: Iterable[tuple[str, str]]) -> None:
    """Emit core.faults.FaultTracker.update's (level, text) lines on a node logger."""
    for level, text in lines:
        if level == "error":  # two call sites: rclpy fixes a call site's severity
            logger.error(text)
        else:
            logger.info(text)
