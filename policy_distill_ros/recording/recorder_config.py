"""What the recorder node records, validated before anything is subscribed (ROS-free).

Topic entries are "name" (type discovered from the graph) or "name=pkg/msg/Type" (the old
"name:pkg/msg/Type" is read with a deprecation warning, docs/contracts.md). The specs in
use and the teacher's sha256 become the bag's custom data, so a dataset always says which
teacher and which observation specs produced it.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import yaml

from policy_distill_ros.core.config_keys import yaml_problem
from policy_distill_ros.core.contract import parse_topic_type
from policy_distill_ros.recording.bag_writer import BagWriterConfig

# custom_data keys (metadata.yaml `custom_data` and the MCAP metadata record `policy_distill_ros`)
KEY_TEACHER_PATH = "teacher_path"
KEY_TEACHER_SHA256 = "teacher_sha256"
KEY_TEACHER_SPEC = "teacher_spec"          # the spec file's YAML text, verbatim
KEY_STUDENT_SPEC = "student_spec"
KEY_RECORDED_TOPICS = "recorded_topics"    # comma-separated, as configured


@dataclass(frozen=True)
class TopicRequest:
    name: str
    msgtype: str | None = None   # None: discover from the publishers on the graph


def parse_topic(entry: str, deprecations: list[str] | None = None) -> TopicRequest:
    """'imu' or 'imu=sensor_msgs/msg/Imu' -> TopicRequest; ValueError naming the entry. A
    deprecation line (old 'imu:Type' form) is appended to `deprecations` for the node to log."""
    if not entry.strip():
        raise ValueError("recorder topics: an entry is empty")
    parsed = parse_topic_type(entry, "recorder topics", type_required=False, legacy_colon=True)
    if parsed.deprecation and deprecations is not None:
        deprecations.append(parsed.deprecation)
    return TopicRequest(parsed.topic, parsed.type_name)


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def teacher_sha256(path: str) -> str:
    """A teacher's identity: the content hash in a teacher directory's teacher.json (the hash
    students record as provenance), else the sha256 of the checkpoint file itself."""
    meta_path = os.path.join(path, "teacher.json")
    if not os.path.isdir(path):
        return sha256_of(path)
    try:
        with open(meta_path, encoding="utf-8") as f:
            digest = json.load(f).get("sha256")
    except (OSError, json.JSONDecodeError, AttributeError) as exc:
        raise ValueError(f"recorder teacher_path {path}: no readable teacher.json ({exc})") \
            from None
    if not isinstance(digest, str) or not digest:
        raise ValueError(f"recorder teacher_path {path}: teacher.json has no sha256")
    return digest


def _spec_text(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        yaml.safe_load(text)
    except OSError as exc:
        raise ValueError(f"recorder {what} {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"recorder {what} {path}: not valid YAML ({yaml_problem(exc)})") from None
    return text


def default_bag_name(now: datetime.datetime | None = None) -> str:
    """rosbag2's default naming: rosbag2_YYYY_MM_DD-HH_MM_SS."""
    return (now or datetime.datetime.now()).strftime("rosbag2_%Y_%m_%d-%H_%M_%S")


@dataclass
class RecorderConfig:
    topics: Sequence[str]
    output_dir: str = "bags"
    bag_path: str = ""                  # explicit bag directory; default: output_dir/<timestamp>
    flush_period_s: float = 0.5
    max_bag_size_mb: float = 0.0        # split files at this size; 0 = one file
    compression: str = "none"
    qos_depth: int = 1000               # subscriber queue per topic
    discovery_warn_s: float = 5.0       # warn about topics still without a publisher after this
    teacher_path: str = ""
    teacher_spec_path: str = ""
    student_spec_path: str = ""
    requests: list[TopicRequest] = field(init=False)
    deprecations: list[str] = field(init=False)    # one line each, for the node to log

    def __post_init__(self) -> None:
        if not self.topics:
            raise ValueError("recorder topics is empty: name at least one topic to record")
        self.deprecations = []
        self.requests = [parse_topic(t, self.deprecations) for t in self.topics]
        names = [r.name for r in self.requests]
        if len(set(names)) != len(names):
            raise ValueError(f"recorder topics: duplicate entries in {names}")
        if not self.bag_path and not self.output_dir:
            raise ValueError("recorder: set output_dir or bag_path")
        if self.qos_depth < 1:
            raise ValueError(f"recorder qos_depth is {self.qos_depth}; expected >= 1")
        if self.discovery_warn_s < 0:
            raise ValueError("recorder discovery_warn_s must be >= 0")
        self.writer_config()   # flush period, size and compression checks live there

    def resolved_bag_path(self, now: datetime.datetime | None = None) -> str:
        return self.bag_path or os.path.join(self.output_dir, default_bag_name(now))

    def custom_data(self) -> dict[str, str]:
        """Specs and teacher identity, read now (a missing file fails at start, not at the end)."""
        data = {KEY_RECORDED_TOPICS: ",".join(r.name for r in self.requests)}
        if self.teacher_path:
            try:
                data[KEY_TEACHER_SHA256] = teacher_sha256(self.teacher_path)
            except OSError as exc:
                raise ValueError(f"recorder teacher_path {self.teacher_path}: "
                                 f"{exc.strerror or exc}") from None
            data[KEY_TEACHER_PATH] = os.path.abspath(self.teacher_path)
        if self.teacher_spec_path:
            data[KEY_TEACHER_SPEC] = _spec_text(self.teacher_spec_path, "teacher_spec_path")
        if self.student_spec_path:
            data[KEY_STUDENT_SPEC] = _spec_text(self.student_spec_path, "student_spec_path")
        return data

    def writer_config(self, bag_path: str = "unset",
                      custom_data: dict[str, str] | None = None) -> BagWriterConfig:
        return BagWriterConfig(path=bag_path, flush_period_s=self.flush_period_s,
                               max_file_size_mb=self.max_bag_size_mb,
                               compression=self.compression,
                               custom_data=dict(custom_data or {}))


def choose_qos(offered: Sequence[tuple[str, str]]) -> tuple[str, str]:
    """(reliability, durability) to subscribe with, from the publishers' (reliability, durability).

    Reliable only when every publisher is reliable (a reliable subscriber never hears a best
    effort publisher); transient-local only when every publisher keeps history for late joiners.
    """
    reliability = "reliable" if offered and all(r == "reliable" for r, _ in offered) \
        else "best_effort"
    durability = "transient_local" if offered and all(d == "transient_local" for _, d in offered) \
        else "volatile"
    return reliability, durability
