"""rosbag2 `metadata.yaml`: build it, write it atomically, read it back.

Version 8 (Jazzy's): QoS profiles are a YAML string with numeric enums, the form Humble, Jazzy and
Kilted all read (Kilted's version 9 turned them into a list, which Humble cannot parse).
rosbag2 itself writes this file only at close; the recorder writes it at start and after every
flush, so a killed recorder still leaves a directory that tools accept.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from policy_distill_ros.core.config_keys import yaml_problem

METADATA_FILE = "metadata.yaml"
METADATA_VERSION = 8
ROS_DISTRO = "kilted"

# rmw enum values (history/reliability/durability/liveliness) as rosbag2 stores them.
HISTORY = {"system_default": 0, "keep_last": 1, "keep_all": 2, "unknown": 3}
RELIABILITY = {"system_default": 0, "reliable": 1, "best_effort": 2, "unknown": 3,
               "best_available": 4}
DURABILITY = {"system_default": 0, "transient_local": 1, "volatile": 2, "unknown": 3,
              "best_available": 4}
LIVELINESS = {"system_default": 0, "automatic": 1, "manual_by_topic": 3, "unknown": 4,
              "best_available": 5}
_INFINITE = {"sec": 2147483647, "nsec": 4294967295}


@dataclass(frozen=True)
class OfferedQos:
    """One publisher's offered QoS, as `ros2 bag play` needs it to republish alike."""

    reliability: str = "reliable"
    durability: str = "volatile"
    history: str = "keep_last"
    depth: int = 10

    def __post_init__(self) -> None:
        for name, table in (("reliability", RELIABILITY), ("durability", DURABILITY),
                            ("history", HISTORY)):
            if getattr(self, name) not in table:
                raise ValueError(f"OfferedQos.{name} is {getattr(self, name)!r}; expected one of "
                                 f"{', '.join(table)}")

    def to_dict(self) -> dict[str, Any]:
        return {"history": HISTORY[self.history], "depth": int(self.depth),
                "reliability": RELIABILITY[self.reliability],
                "durability": DURABILITY[self.durability],
                "deadline": dict(_INFINITE), "lifespan": dict(_INFINITE),
                "liveliness": LIVELINESS["automatic"],
                "liveliness_lease_duration": dict(_INFINITE),
                "avoid_ros_namespace_conventions": False}


def qos_string(profiles: Sequence[OfferedQos]) -> str:
    """The `offered_qos_profiles` string (metadata.yaml and MCAP channel metadata alike)."""
    if not profiles:
        return ""
    return yaml.safe_dump([p.to_dict() for p in profiles], default_flow_style=False).strip()


@dataclass
class TopicEntry:
    name: str
    msgtype: str
    type_hash: str
    qos: str
    message_count: int = 0


@dataclass
class FileEntry:
    path: str
    message_count: int = 0
    start_ns: int | None = None
    end_ns: int | None = None


@dataclass
class BagMetadata:
    """Everything metadata.yaml says, in one place."""

    topics: list[TopicEntry] = field(default_factory=list)
    files: list[FileEntry] = field(default_factory=list)
    custom_data: dict[str, str] = field(default_factory=dict)
    compression_format: str = ""
    compression_mode: str = ""

    def to_dict(self) -> dict[str, Any]:
        starts = [f.start_ns for f in self.files if f.start_ns is not None]
        ends = [f.end_ns for f in self.files if f.end_ns is not None]
        start = min(starts) if starts else 0
        duration = max(ends) - start if starts else 0
        return {"rosbag2_bagfile_information": {
            "version": METADATA_VERSION,
            "storage_identifier": "mcap",
            "duration": {"nanoseconds": duration},
            "starting_time": {"nanoseconds_since_epoch": start},
            "message_count": sum(f.message_count for f in self.files),
            "topics_with_message_count": [
                {"topic_metadata": {"name": t.name, "type": t.msgtype,
                                    "serialization_format": "cdr",
                                    "offered_qos_profiles": t.qos,
                                    "type_description_hash": t.type_hash},
                 "message_count": t.message_count}
                for t in self.topics],
            "compression_format": self.compression_format,
            "compression_mode": self.compression_mode,
            "relative_file_paths": [f.path for f in self.files],
            "files": [{"path": f.path,
                       "starting_time": {"nanoseconds_since_epoch": f.start_ns or 0},
                       "duration": {"nanoseconds": (f.end_ns - f.start_ns)
                                    if f.start_ns is not None and f.end_ns is not None else 0},
                       "message_count": f.message_count}
                      for f in self.files],
            "custom_data": dict(self.custom_data),
            "ros_distro": ROS_DISTRO,
        }}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), default_flow_style=False, sort_keys=False)


def write_metadata(bag_dir: str, metadata: BagMetadata) -> None:
    """Replace `bag_dir/metadata.yaml` atomically (temp file + os.replace): never half a file."""
    path = os.path.join(bag_dir, METADATA_FILE)
    tmp = path + ".tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(metadata.to_yaml())
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_metadata(bag_dir: str) -> dict[str, Any]:
    """The `rosbag2_bagfile_information` mapping; ValueError naming the file when it is broken."""
    path = os.path.join(bag_dir, METADATA_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({yaml_problem(exc)})") from None
    if not isinstance(doc, Mapping) or not isinstance(doc.get("rosbag2_bagfile_information"),
                                                      Mapping):
        raise ValueError(f"{path}: no 'rosbag2_bagfile_information' mapping; not a rosbag2 "
                         f"metadata file")
    return dict(doc["rosbag2_bagfile_information"])
