"""recorder_node: configured topics, as raw CDR bytes, into a rosbag2 directory with MCAP storage.

No message is ever deserialized: subscriptions are `raw=True` and the callback hands the bytes
to `recording.BagWriter`, whose thread writes a chunk every `flush_period_s`. A topic is
subscribed once it has a publisher, with the publishers' QoS (reliable only if all are; best
effort hears both). Log time = wall time when the recorder takes the message (delivery order), as
rosbag2 does; header stamps inside the messages are untouched. Ctrl-C closes the bag properly.
"""
from __future__ import annotations

import importlib
import sys
import time

import rclpy
import rclpy.logging
import rclpy.subscription
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from policy_distill_ros.nodes.ros_common import declare, spin_node, warn_unknown_parameters
from policy_distill_ros.recording.bag_metadata import OfferedQos
from policy_distill_ros.recording.bag_writer import BagWriter
from policy_distill_ros.recording.recorder_config import RecorderConfig, choose_qos

DISCOVERY_PERIOD_S = 0.5
STATUS_PERIOD_S = 10.0
DRAIN_LIMIT = 2000           # messages taken per callback beyond the one delivered
_HAS_MESSAGE_INFO = hasattr(rclpy.subscription, "MessageInfo")   # Iron and newer
_RELIABILITY = {ReliabilityPolicy.RELIABLE: "reliable", ReliabilityPolicy.BEST_EFFORT:
                "best_effort"}
_DURABILITY = {DurabilityPolicy.TRANSIENT_LOCAL: "transient_local",
               DurabilityPolicy.VOLATILE: "volatile"}
_HISTORY = {HistoryPolicy.KEEP_LAST: "keep_last", HistoryPolicy.KEEP_ALL: "keep_all"}


def message_class(msgtype: str):
    pkg, _kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{pkg}.msg"), name)


class RecorderNode(Node):
    """Subscribes raw to each configured topic once it has a publisher and hands the bytes to
    `BagWriter`; `destroy_node` closes the bag, so Ctrl-C leaves a complete file."""

    def __init__(self) -> None:
        super().__init__("recorder_node")
        self._logger_name = self.get_logger().name   # still usable after the context is gone
        self.config = RecorderConfig(
            topics=list(declare(self, "topics", ["joint_states", "imu", "episode"],
                                "topics to record: 'name' (type from the graph) or "
                                "'name=pkg/msg/Type'", read_only=True)),
            output_dir=declare(self, "output_dir", "bags", "a new timestamped bag per run here",
                               read_only=True),
            bag_path=declare(self, "bag_path", "", "explicit bag directory (must not exist)",
                             read_only=True),
            flush_period_s=declare(self, "flush_period_s", 0.5, "chunk written at least this "
                                   "often; a kill loses at most this", read_only=True,
                                   min_value=0.01, max_value=1.0),
            max_bag_size_mb=declare(self, "max_bag_size_mb", 0.0, "split files at this size "
                                    "(0 = never)", read_only=True, min_value=0.0),
            compression=declare(self, "compression", "none", "chunk compression",
                                read_only=True, choices=["none", "zstd"]),
            qos_depth=declare(self, "qos_depth", 1000, "subscriber queue depth per topic",
                              read_only=True, min_value=1),
            discovery_warn_s=declare(self, "discovery_warn_s", 5.0, "warn about topics with no "
                                     "publisher after this long", read_only=True, min_value=0.0),
            teacher_path=declare(self, "teacher_path", "", "teacher directory (its content hash "
                                 "is recorded) or checkpoint file (its sha256)",
                                 read_only=True),
            teacher_spec_path=declare(self, "teacher_spec_path", "", "teacher policy spec YAML, "
                                      "recorded verbatim", read_only=True),
            student_spec_path=declare(self, "student_spec_path", "", "student policy spec YAML, "
                                      "recorded verbatim", read_only=True))
        warn_unknown_parameters(self)
        for line in self.config.deprecations:
            self.get_logger().warning(line)
        self.bag_path = self.config.resolved_bag_path()
        self.writer = BagWriter(self.config.writer_config(self.bag_path,
                                                          self.config.custom_data())).open()
        self.failed = False
        self._subs: dict[str, object] = {}
        self._subscribed_reliable: dict[str, bool] = {}
        self._started = time.monotonic()
        self._warned_missing = False
        self._discovery = self.create_timer(DISCOVERY_PERIOD_S, self._discover)
        self._status = self.create_timer(STATUS_PERIOD_S, self._report)
        self.create_timer(0.2, self._check_writer)
        self.get_logger().info(f"recording {[r.name for r in self.config.requests]} to "
                               f"{self.bag_path}")
        self._discover()

    def _discover(self) -> None:
        """Subscribe every requested topic that now has a publisher (and thus a type and QoS)."""
        graph = dict(self.get_topic_names_and_types())
        missing = []
        for request in self.config.requests:
            topic = self.resolve_topic_name(request.name)
            publishers = self.get_publishers_info_by_topic(topic)
            if topic in self._subs:
                self._check_qos(topic, publishers)
                continue
            types = graph.get(topic, [])
            msgtype = request.msgtype or (types[0] if len(types) == 1 else None)
            if not publishers or msgtype is None:
                if len(types) > 1 and request.msgtype is None:
                    self.get_logger().warn(f"topic {topic} has several types {types}; name one "
                                           f"as '{request.name}=pkg/msg/Type'")
                missing.append(topic)
                continue
            self._subscribe(topic, msgtype, publishers)
        if missing and not self._warned_missing and \
                time.monotonic() - self._started > self.config.discovery_warn_s:
            self._warned_missing = True
            self.get_logger().warn(f"no publisher yet on {missing}; still waiting")

    def _subscribe(self, topic: str, msgtype: str, publishers) -> None:
        offered = [(_RELIABILITY.get(p.qos_profile.reliability, "best_effort"),
                    _DURABILITY.get(p.qos_profile.durability, "volatile")) for p in publishers]
        reliability, durability = choose_qos(offered)
        try:
            cls = message_class(msgtype)
        except (ImportError, AttributeError, ValueError) as exc:
            self.get_logger().error(f"cannot record {topic}: type {msgtype} is not importable "
                                    f"({exc})")
            return
        channel = self.writer.add_topic(topic, msgtype, qos=[OfferedQos(
            reliability=r, durability=d,
            history=_HISTORY.get(p.qos_profile.history, "keep_last"),
            depth=int(p.qos_profile.depth)) for (r, d), p in zip(offered, publishers, strict=True)])
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=self.config.qos_depth,
                         reliability=ReliabilityPolicy.RELIABLE if reliability == "reliable"
                         else ReliabilityPolicy.BEST_EFFORT,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL
                         if durability == "transient_local" else DurabilityPolicy.VOLATILE)
        callback, holder = self._make_callback(channel, cls)
        subscription = self.create_subscription(cls, topic, callback, qos, raw=True)
        holder.append(subscription)   # drain() takes from this subscription
        self._subs[topic] = subscription
        self._subscribed_reliable[topic] = reliability == "reliable"
        self.get_logger().info(f"recording {topic} ({msgtype}, {reliability}, {durability})")

    def _make_callback(self, channel: int, cls):
        """The raw callback: store the bytes, then take what else is already queued.

        The executor costs far more per message than the write does, so each callback drains
        up to DRAIN_LIMIT further messages straight from the subscription (timers still get
        their turn between bursts). Log time = wall time at take, in delivery order, as rosbag2.
        """
        write = self.writer.write
        holder: list = []

        def drain() -> None:
            if not holder:
                return
            handle = holder[0].handle
            with handle:
                for _ in range(DRAIN_LIMIT):
                    taken = handle.take_message(cls, True)
                    if taken is None:
                        return
                    info = taken[1] if _HAS_MESSAGE_INFO else None
                    write(channel, time.time_ns(), taken[0],
                          info["source_timestamp"] or None if info else None)

        if _HAS_MESSAGE_INFO:
            def callback(data: bytes, info) -> None:
                write(channel, time.time_ns(), data, info["source_timestamp"] or None)
                drain()
        else:
            def callback(data: bytes) -> None:  # type: ignore[misc]  # Humble: no MessageInfo
                write(channel, time.time_ns(), data)
                drain()
        return callback, holder

    def _check_qos(self, topic: str, publishers) -> None:
        if self._subscribed_reliable.get(topic) and any(
                p.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for p in publishers):
            self._subscribed_reliable[topic] = False   # warn once
            self.get_logger().warn(f"a best-effort publisher joined {topic}; this reliable "
                                   f"subscription does not hear it (restart the recorder)")

    def _check_writer(self) -> None:
        if self.writer.error is not None and not self.failed:
            self.failed = True
            self.get_logger().error(str(self.writer.error))
            for sub in self._subs.values():
                self.destroy_subscription(sub)
            self._subs.clear()
            self._discovery.cancel()
            rclpy.try_shutdown()   # ends spin(); main returns 1

    def _report(self) -> None:
        counts = self.writer.topic_counts()
        self.get_logger().info(f"{self.writer.written} messages on disk "
                               f"({self.writer.pending} queued, {self.writer.dropped} dropped): "
                               f"{counts}")

    def destroy_node(self) -> None:
        self.writer.close()
        # After Ctrl-C the context is already shut down: a plain logger (no rosout publisher).
        logger = rclpy.logging.get_logger(self._logger_name)
        if self.writer.error is None:
            logger.info(f"closed bag {self.bag_path}: {self.writer.written} messages, "
                                   f"{self.writer.dropped} dropped")
        super().destroy_node()


def main(args=None) -> int:
    nodes: list = []

    def make() -> RecorderNode:
        nodes.append(RecorderNode())
        return nodes[-1]

    code = spin_node(make, args)   # 1: a bad configuration, refused at start
    if nodes and (nodes[0].failed or nodes[0].writer.error is not None):
        return 1   # recording stopped on a write error (disk full): not a clean close
    return code


if __name__ == "__main__":
    sys.exit(main())
