"""A policy node's hot path (student, teacher): sensor subscriptions in, command + echo out, on a
thread of its own.

Only adapts messages; the meaning of every number (which field, which joint, scaling, history)
lives in `core/`.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from rclpy.node import Node
from rclpy.qos import QoSProfile

from policy_distill_ros.nodes.action_publisher import ActionPublisher
from policy_distill_ros.nodes.rclpy_internals import LoopServed, TakeLoop
from policy_distill_ros.nodes.ros_common import SENSOR_QOS
from policy_distill_ros.nodes.topic_types import MESSAGE_TYPES, message_type_for


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
    `wake_on`: the topics whose arrival wakes the thread (default: all). The others are taken
    when one of these arrives, first, or by `take_inputs()` from the caller's thread (a timer
    loop: no wake-up per message at all). `on_message(topic, msg, received_ns)`: received_ns is
    the rmw receive time (system clock, ns), None where the binding does not give it.
    """

    def __init__(self, owner: Node, topics: Sequence[str],
                 on_message: Callable[[str, object, int | None], None],
                 joint_names: Sequence[str],
                 type_overrides: Mapping[str, str] | None = None,
                 events: Sequence[tuple[str, type, object, Callable[[object], None]]] = (),
                 sensor_qos: QoSProfile = SENSOR_QOS, decode_sensors: bool = False,
                 wake_on: Sequence[str] | None = None) -> None:
        self.node = owner
        group = LoopServed()
        self.subscriptions = [
            owner.create_subscription(msg_type, topic, callback, qos, callback_group=group)
            for topic, msg_type, qos, callback in events]
        passive = []
        for topic in topics:
            msg_type = message_type_for(topic, type_overrides)
            callback = _bind(on_message, topic)
            decoder = _decoder_for(msg_type) if decode_sensors else None
            if decoder is not None:
                callback = _decoding(callback, decoder, msg_type)
            subscription = owner.create_subscription(
                msg_type, topic, callback, sensor_qos, raw=decoder is not None,
                callback_group=group)
            if wake_on is None or topic in wake_on:
                self.subscriptions.append(subscription)
            else:
                passive.append(subscription)
        self.out = ActionPublisher(owner, joint_names)
        self._loop = TakeLoop(owner, self.subscriptions, f"{owner.get_name()}_io",
                              group=group, passive=passive).start()
        self.subscriptions += passive

    def take_inputs(self) -> None:
        """Hand what the passive (not `wake_on`) topics hold to `on_message`, on this thread."""
        self._loop.take_passive()

    def close(self) -> None:
        self._loop.close()
        for subscription in self.subscriptions:
            self.node.destroy_subscription(subscription)
        self.subscriptions = []
        self.out.destroy()


def _decoder_for(msg_type: type) -> Callable[[bytes], object] | None:
    from policy_distill_ros.core.cdr import DECODERS
    for name, cls in MESSAGE_TYPES.items():
        if cls is msg_type and name in DECODERS:
            return DECODERS[name]()
    return None


def _decoding(callback: Callable[[object, dict | None], None],
              decoder: Callable[[bytes], object],
              msg_type: type) -> Callable[[bytes, dict | None], None]:
    from rclpy.serialization import deserialize_message

    from policy_distill_ros.core.cdr import CdrError

    def on_raw(data: bytes, info: dict | None = None) -> None:
        try:
            msg = decoder(data)
        except (CdrError, UnicodeDecodeError):
            msg = deserialize_message(data, msg_type)  # not plain CDR: rclpy knows them all
        callback(msg, info)
    return on_raw


def _bind(on_message: Callable[[str, object, int | None], None],
          topic: str) -> Callable[[object, dict | None], None]:
    def on_msg(msg: object, info: dict | None = None) -> None:
        on_message(topic, msg, None if info is None else info["received_timestamp"])
    return on_msg
