"""rclpy glue shared by every node: parameter declaration, QoS profiles, stamps, `main` runner.

Kept tiny on purpose: logic lives in `core/`, this file only adapts it to ROS.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import rclpy
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)

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
           "stamp_to_s", "s_to_stamp", "spin_node"]


def declare(node: Node, name: str, default: Any, description: str, *,
            read_only: bool = False, min_value: Optional[float] = None,
            max_value: Optional[float] = None, choices: Optional[Sequence[str]] = None) -> Any:
    """Declare a parameter with a descriptor (shown by `ros2 param describe`) and return its value.

    Ranges are enforced by rclpy itself; `choices` is checked here so a typo fails at start-up
    with the allowed values in the message instead of misbehaving later.
    """
    descriptor = ParameterDescriptor(description=description, read_only=read_only)
    if min_value is not None or max_value is not None:
        lo = min_value if min_value is not None else -1e300
        hi = max_value if max_value is not None else 1e300
        if isinstance(default, bool):
            pass
        elif isinstance(default, int):
            descriptor.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=0)]
        else:
            descriptor.floating_point_range = [FloatingPointRange(from_value=float(lo),
                                                                  to_value=float(hi), step=0.0)]
    if choices:
        descriptor.additional_constraints = "one of: " + ", ".join(choices)
    value = node.declare_parameter(name, default, descriptor).value
    if choices and value not in choices:
        raise ValueError(f"parameter '{name}' of node '{node.get_name()}' is {value!r}; "
                         f"expected one of {', '.join(choices)}")
    return value


def stamp_to_s(stamp) -> float:
    """builtin_interfaces/Time -> seconds as float."""
    return stamp.sec + stamp.nanosec * 1e-9


def s_to_stamp(seconds: float, stamp=None):
    """Seconds -> builtin_interfaces/Time (filled in place when `stamp` is given)."""
    from builtin_interfaces.msg import Time
    stamp = stamp if stamp is not None else Time()
    sec = int(seconds // 1)
    stamp.sec = sec
    stamp.nanosec = min(int(round((seconds - sec) * 1e9)), 999_999_999)
    return stamp


def spin_node(make_node: Callable[[], Node], args=None, executor=None) -> int:
    """Run a node until Ctrl-C or external shutdown, then tear it down cleanly.

    Every node's `main` calls this so shutdown behaves the same everywhere: no traceback on
    Ctrl-C, `destroy_node` always runs (it closes bags, stops loop threads), exit code 0.
    """
    rclpy.init(args=args)
    node = None
    try:
        node = make_node()
        executor = executor or SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.try_shutdown()
    return 0
