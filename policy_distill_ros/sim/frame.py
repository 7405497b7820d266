"""What the simulator measured at one instant, per topic, as plain arrays.

Field keys are the attribute paths of the ROS message the topic carries (`position`,
`twist.twist.linear`, `data`, ...), exactly the `field` an observation spec names, so one frame
feeds `ObservationAssembler.on_sample` directly (in-process path) and `sim_node` turns the same
frame into messages. `names[field]` is the joint names of a JointState field or the layout labels
of a Float64MultiArray.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# The topic names are the contract's (re-exported: sim code and tests say `topics.IMU`).
from policy_distill_ros.core.contract import (
    CONTACT_FORCES,
    DYNAMICS,
    EPISODE,
    EPISODE_LABELS,
    IMU,
    JOINT_STATES,
    ODOMETRY,
)

__all__ = ["JOINT_STATES", "IMU", "ODOMETRY", "CONTACT_FORCES", "DYNAMICS", "EPISODE",
           "EPISODE_LABELS", "SENSOR_TOPICS", "PRIVILEGED_TOPICS", "TopicSample", "SensorFrame"]

SENSOR_TOPICS = (JOINT_STATES, IMU)
PRIVILEGED_TOPICS = (ODOMETRY, CONTACT_FORCES, DYNAMICS)


@dataclass(frozen=True)
class TopicSample:
    """One topic's fields (float64 arrays) and, per field, the names of its elements."""

    fields: Mapping[str, np.ndarray]
    names: Mapping[str, Sequence[str]]


@dataclass(frozen=True)
class SensorFrame:
    """Every topic the simulator publishes for one control step, stamped with sim time."""

    stamp_s: float
    episode_id: int
    step: int
    reward: float
    episode_return: float
    terminated: bool
    truncated: bool
    topics: Mapping[str, TopicSample]

    @property
    def done(self) -> bool:
        return self.terminated or self.truncated

    def field(self, topic: str, field: str) -> np.ndarray:
        """One field's values; KeyError names what is missing."""
        try:
            sample = self.topics[topic]
        except KeyError:
            raise KeyError(f"sensor frame has no topic {topic!r}; has {sorted(self.topics)}") \
                from None
        try:
            return sample.fields[field]
        except KeyError:
            raise KeyError(f"topic {topic!r} has no field {field!r}; has "
                           f"{sorted(sample.fields)}") from None

    def feed(self, assembler, topics: Iterable[str] | None = None) -> None:
        """Hand the frame to an `ObservationAssembler` (or anything with `on_sample`).

        Only the topics the assembler's spec reads are passed when `topics` is None and the
        assembler exposes `spec.topics`; this keeps a student spec from ever seeing privileged
        data.
        """
        if topics is None:
            spec = getattr(assembler, "spec", None)
            topics = getattr(spec, "topics", None) or self.topics.keys()
        for topic in topics:
            sample = self.topics.get(topic)
            if sample is not None:
                assembler.on_sample(topic, self.stamp_s, dict(sample.fields), dict(sample.names))

    def episode_values(self) -> np.ndarray:
        """The `episode` topic's data, in `EPISODE_LABELS` order."""
        return self.topics[EPISODE].fields["data"]
