"""Distillation dataset: recorded bags -> (student obs, teacher obs, executed action) samples.

The vectors come from the same `core.observation.ObservationAssembler` the nodes run, fed with
the bag's messages in recording order, so training, simulation and the robot cannot disagree
about order, scaling or history layout.

Replay rule (one sample per action echo, the stamp rule of docs/contracts.md):

- A recorder keeps each topic's own order but not the order *across* topics (it takes what
  arrived topic by topic: an echo can be logged before the sensor message it answers). So a
  bag is replayed by stamp, not by log time: every message is an event at its header stamp;
  events are sorted by (time segment, stamp, kind) with kind order episode marker < sensor
  message < action echo, recording order breaking ties (re-published frames, double answers).
- At each echo (stamp `s`) both observations are built from everything stamped `<= s`: one
  history step per policy decision, as in the policy node and in `sim.spec_env.SpecEnv`. The
  sample exists only when every input topic has had a message and the newest input stamp
  equals `s` exactly (integer nanoseconds); otherwise (the frame's messages were dropped) the
  echo gives no sample and is counted, but its build still advanced the history, as the
  node's tick did.
- `last_action` is fed exactly as `nodes/student_node.py` and `SpecEnv` feed it: the executed
  (post-processed) command of the previous decision, set after each build; zeros at the start
  of every episode (`ObservationAssembler.reset`, which all three call).
- A message without a header (`Float64MultiArray`, e.g. `privileged/contact_forces`): when its
  topic has as many messages as the `episode` topic (one per simulator frame, nothing dropped),
  the k-th one belongs to the k-th frame; otherwise it takes the newest stamp logged before it
  (and `BagStats.headerless_by_log_order` names the topic).
- A new `episode_id` on the `episode` topic resets both assemblers (history cleared). Time
  going backwards on a topic starts a new time segment (`reset_time_on_episode`); without an
  `episode` topic each segment is an episode.
- Echoes marked as fallback (`core.contract.is_fallback_frame`: `fallback`, `withheld,fallback`)
  were not policy decisions: they feed `last_action` but give no sample.

`actions` are the executed commands mapped back to raw policy output space,
`(command - offset) / scale` (exact unless the command was clipped to a limit).
"""
from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from policy_distill_ros.core.contract import (
    EPISODE,
    FALLBACK_FRAME,
    POLICY_ACTION,
    header_stamp_ns,
    is_fallback_frame,
    ns_to_s,
    s_to_ns,
)
from policy_distill_ros.core.fields import layout_labels
from policy_distill_ros.core.observation import ObservationAssembler
from policy_distill_ros.core.spec import PolicySpec, SpecError
from policy_distill_ros.recording.bag_reader import BagError, bag_info, read_bag

__all__ = ["DatasetError", "DistillDataset", "BagStats", "dataset_from_bags", "dataset_from_bag",
           "EPISODE_TOPIC", "FALLBACK_FRAME"]

LOG = logging.getLogger(__name__)
EPISODE_TOPIC = EPISODE           # names kept for callers; defined in core.contract
_FORMAT = "policy_distill_ros.dataset/1"


class DatasetError(ValueError):
    """A bag cannot be turned into samples; the message names the bag file and the topic."""


# ---------------------------------------------------------------------------------------------
# the dataset

def _as_2d_float(name: str, value: Any) -> np.ndarray:
    arr = np.ascontiguousarray(np.asarray(value, dtype=np.float32))
    if arr.ndim != 2:
        raise ValueError(f"DistillDataset.{name} must be 2-D [N, size], got shape {arr.shape}")
    if arr.size and not np.isfinite(arr).all():
        row = int(np.flatnonzero(~np.isfinite(arr).all(axis=1))[0])
        raise ValueError(f"DistillDataset.{name} has NaN/Inf (first at row {row})")
    return arr


@dataclass
class DistillDataset:
    """Aligned samples; row i of every array is one policy decision.

    student_obs float32 [N, student_spec.size] (history included); teacher_obs float32
    [N, teacher_spec.size]; actions float32 [N, A] executed action in raw policy output space;
    episode_id int64 [N]; episode_return {episode id: return} (NaN when unknown); sources: the
    bag paths (provenance).
    """

    student_obs: np.ndarray
    teacher_obs: np.ndarray
    actions: np.ndarray
    episode_id: np.ndarray
    episode_return: dict[int, float] = field(default_factory=dict)
    sources: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.student_obs = _as_2d_float("student_obs", self.student_obs)
        self.teacher_obs = _as_2d_float("teacher_obs", self.teacher_obs)
        self.actions = _as_2d_float("actions", self.actions)
        ids = np.asarray(self.episode_id)
        if ids.ndim != 1 or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
            raise ValueError(f"DistillDataset.episode_id must be a 1-D integer array, got "
                             f"{ids.dtype} {ids.shape}")
        self.episode_id = np.ascontiguousarray(ids, dtype=np.int64)
        n = len(self.episode_id)
        for name in ("student_obs", "teacher_obs", "actions"):
            if getattr(self, name).shape[0] != n:
                raise ValueError(f"DistillDataset.{name} has {getattr(self, name).shape[0]} rows, "
                                 f"episode_id has {n}")
        self.episode_return = {int(k): float(v) for k, v in self.episode_return.items()}
        self.sources = tuple(str(s) for s in self.sources)

    def __len__(self) -> int:
        return int(self.episode_id.shape[0])

    @property
    def episodes(self) -> np.ndarray:
        """Distinct episode ids in order of first appearance."""
        _, first = np.unique(self.episode_id, return_index=True)
        return self.episode_id[np.sort(first)]

    @property
    def action_size(self) -> int:
        return int(self.actions.shape[1])

    def subset(self, rows: np.ndarray) -> DistillDataset:
        """The samples at `rows` (indices or a boolean mask); returns of kept episodes only."""
        rows = np.asarray(rows)
        ids = self.episode_id[rows]
        kept = set(np.unique(ids).tolist())
        return DistillDataset(self.student_obs[rows], self.teacher_obs[rows], self.actions[rows],
                              ids, {k: v for k, v in self.episode_return.items() if k in kept},
                              self.sources)

    def _check_compatible(self, other: DistillDataset) -> None:
        for name in ("student_obs", "teacher_obs", "actions"):
            a, b = getattr(self, name), getattr(other, name)
            if a.shape[1] != b.shape[1]:
                raise ValueError(f"concat: {name} widths differ ({a.shape[1]} vs {b.shape[1]}): "
                                 f"datasets built with different specs")

    def concat(self, other: DistillDataset) -> DistillDataset:
        """Both datasets in one; `other`'s episodes get fresh ids after this one's."""
        self._check_compatible(other)
        sources = self.sources + tuple(s for s in other.sources if s not in self.sources)
        start = int(max(self.episode_id.max(initial=-1), max(self.episode_return, default=-1))) + 1
        unique, inverse = np.unique(other.episode_id, return_inverse=True)
        mapping = {int(u): start + i for i, u in enumerate(unique)}
        returns = dict(self.episode_return)
        returns.update({mapping[k]: v for k, v in other.episode_return.items() if k in mapping})
        return DistillDataset(np.concatenate([self.student_obs, other.student_obs]),
                              np.concatenate([self.teacher_obs, other.teacher_obs]),
                              np.concatenate([self.actions, other.actions]),
                              np.concatenate([self.episode_id,
                                              (start + inverse).astype(np.int64)]),
                              returns, sources)

    def split_by_episode(self, val_fraction: float, seed: int
                         ) -> tuple[DistillDataset, DistillDataset]:
        """(train, val) with whole episodes on each side; val gets round(fraction * episodes),
        at least one when the fraction is > 0."""
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
        episodes = self.episodes
        if val_fraction == 0.0:
            return self, self.subset(np.zeros(len(self), dtype=bool))
        if len(episodes) < 2:
            raise ValueError(f"split_by_episode: {len(episodes)} episode(s); a validation split "
                             f"needs at least 2 (record more episodes or set val_fraction 0)")
        n_val = min(len(episodes) - 1, max(1, int(round(val_fraction * len(episodes)))))
        rng = np.random.default_rng(seed)
        val_ids = rng.permutation(episodes)[:n_val]
        in_val = np.isin(self.episode_id, val_ids)
        return self.subset(~in_val), self.subset(in_val)

    def filter_episodes(self, min_return: float | None) -> DistillDataset:
        """Keep episodes whose return is >= min_return (unknown returns are dropped); None keeps
        everything."""
        if min_return is None:
            return self
        good = [k for k, v in self.episode_return.items() if math.isfinite(v) and v >= min_return]
        return self.subset(np.isin(self.episode_id, np.asarray(good, dtype=np.int64)))

    # -- files (npz, no pickle) ---------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write an .npz (arrays + JSON header; loads with allow_pickle=False), atomically."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_suffix(".npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        ids = np.asarray(sorted(self.episode_return), dtype=np.int64)
        header = json.dumps({"format": _FORMAT, "sources": list(self.sources)})
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                np.savez(f, student_obs=self.student_obs, teacher_obs=self.teacher_obs,
                         actions=self.actions, episode_id=self.episode_id, return_ids=ids,
                         return_values=np.asarray([self.episode_return[int(i)] for i in ids],
                                                  dtype=np.float64),
                         header=np.frombuffer(header.encode(), dtype=np.uint8))
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> DistillDataset:
        try:
            with np.load(path, allow_pickle=False) as data:
                header = json.loads(bytes(data["header"]).decode())
                if header.get("format") != _FORMAT:
                    raise ValueError(f"format {header.get('format')!r} is not {_FORMAT!r}")
                returns = dict(zip(data["return_ids"].tolist(), data["return_values"].tolist(),
                                   strict=True))
                return cls(data["student_obs"], data["teacher_obs"], data["actions"],
                           data["episode_id"], returns, tuple(header.get("sources", ())))
        except (OSError, KeyError, ValueError) as exc:
            raise DatasetError(f"dataset file {path}: {exc}") from None


# ---------------------------------------------------------------------------------------------
# bags -> dataset

@dataclass
class BagStats:
    """What replaying one bag gave; logged and kept in the training report."""

    path: str
    samples: int = 0
    echoes: int = 0
    fallback_echoes: int = 0
    unmatched_echoes: int = 0       # no state with exactly the echo's stamp
    early_echoes: int = 0           # before every input topic had a message
    episodes: int = 0
    headerless_by_log_order: list = field(default_factory=list)   # topics stamped by log order

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, list) else v for k, v in self.__dict__.items()}


def _bare(topic: str) -> str:
    return topic.lstrip("/")


def _check_specs(student_spec: PolicySpec, teacher_spec: PolicySpec) -> None:
    for name, spec in (("student_spec", student_spec), ("teacher_spec", teacher_spec)):
        if not isinstance(spec, PolicySpec):
            raise TypeError(f"{name} must be a core.spec.PolicySpec, got {type(spec).__name__}")
    try:
        student_spec.observation.require_no_privileged()
    except SpecError as exc:
        raise DatasetError(f"student spec: {exc}") from None
    s, t = student_spec.action.to_dict(), teacher_spec.action.to_dict()
    if s != t:
        diff = sorted(k for k in set(s) | set(t) if s.get(k) != t.get(k))
        raise DatasetError(f"student and teacher action specs differ in {diff}: a student must "
                           f"command the same joints the same way as its teacher")


_EPISODE, _SENSOR, _ECHO = 0, 1, 2     # event kinds, in their order at one stamp


class _Replay:
    """Replays one bag through two assemblers (see the module docstring for the rule)."""

    def __init__(self, path: str, student_spec: PolicySpec, teacher_spec: PolicySpec,
                 action_topic: str, has_episode_topic: bool) -> None:
        self.path = path
        self.action = student_spec.action
        self.assemblers = (ObservationAssembler(student_spec.observation, self.action.size),
                           ObservationAssembler(teacher_spec.observation, self.action.size))
        self.users: dict[str, list[tuple[ObservationAssembler, str]]] = {}
        for asm in self.assemblers:   # bag topic (no leading /) -> (assembler, spec's name)
            for topic in asm.spec.topics:
                self.users.setdefault(_bare(topic), []).append((asm, topic))
        self.action_topic = action_topic
        self.has_episode_topic = has_episode_topic
        # per topic, in recording order: (stamp ns or None, message)
        self.streams: dict[str, list[tuple[int | None, Any]]] = {}
        self.order: list[tuple[str, int]] = []      # (topic, index in its stream), recording order
        self.last_fed: dict[str, int] = {}
        self.stamped_topics: set[str] = set()
        self.episode: Any = None
        self.returns: dict[int, float] = {}
        self.stats = BagStats(path)
        self.rows: tuple[list, list, list, list] = ([], [], [], [])
        self._scale = self.action._arrays["scale"]
        self._offset = self.action._arrays["offset"]
        self._joint_index: dict[tuple, np.ndarray] = {}

    # -- collect ------------------------------------------------------------------------------
    def on_message(self, topic: str, msg: Any) -> None:
        if topic == EPISODE_TOPIC:
            labels = layout_labels(msg) or []
            values = dict(zip(labels, np.asarray(msg.data, dtype=np.float64).tolist(),
                              strict=False))
            missing = [k for k in ("episode_id", "stamp_s") if k not in values]
            if missing:
                raise DatasetError(f"bag {self.path}: topic '{EPISODE_TOPIC}' message has no "
                                   f"{missing} (layout labels {labels})")
            item = (s_to_ns(values["stamp_s"]), values)
        elif hasattr(msg, "header"):
            item = (header_stamp_ns(msg), msg)
        else:
            item = (None, msg)
        stream = self.streams.setdefault(topic, [])
        self.order.append((topic, len(stream)))
        stream.append(item)

    def _headerless_stamps(self) -> None:
        """Give every headerless message a stamp (see the module docstring)."""
        frames = self.streams.get(EPISODE_TOPIC, [])
        for topic, stream in self.streams.items():
            if not stream or stream[0][0] is not None:
                continue
            if len(stream) == len(frames):
                stream[:] = [(frames[i][0], msg) for i, (_, msg) in enumerate(stream)]
            else:
                self.stats.headerless_by_log_order.append(topic)
        if self.stats.headerless_by_log_order:
            recent = 0
            for topic, i in self.order:
                stamp, msg = self.streams[topic][i]
                if stamp is None:
                    self.streams[topic][i] = (recent, msg)
                else:
                    recent = stamp

    def _events(self) -> list[tuple]:
        """(segment, stamp, kind, recording index, topic, payload) sorted for replay."""
        self._headerless_stamps()
        position = {key: n for n, key in enumerate(self.order)}
        events = []
        for topic, stream in self.streams.items():
            kind = _ECHO if topic == self.action_topic else \
                _EPISODE if topic == EPISODE_TOPIC else _SENSOR
            segment, previous = 0, None
            for i, (stamp, payload) in enumerate(stream):
                if previous is not None and stamp < previous:
                    segment += 1          # time went backwards on this topic
                previous = stamp
                events.append((segment, stamp, kind, position[(topic, i)], topic, payload))
        events.sort(key=lambda e: e[:4])
        return events

    # -- replay -------------------------------------------------------------------------------
    def run(self) -> None:
        for segment, stamp, kind, _, topic, payload in self._events():
            if kind == _EPISODE:
                episode = int(payload["episode_id"])
                if episode != self.episode:
                    self._new_episode(episode)
                if "episode_return" in payload:
                    self.returns[episode] = float(payload["episode_return"])
            elif kind == _SENSOR:
                if not self.has_episode_topic and segment != self.episode:
                    self._new_episode(segment)
                    self.returns.setdefault(segment, float("nan"))
                self._feed(topic, stamp, payload)
            else:
                self._on_echo(stamp, payload)

    def _new_episode(self, episode: Any) -> None:
        self.episode = episode
        self.stats.episodes += 1
        self.last_fed.clear()
        for asm in self.assemblers:
            asm.reset()   # history and last action cleared, as in the node and SpecEnv

    def _feed(self, topic: str, stamp: int, msg: Any) -> None:
        for asm, spec_topic in self.users[topic]:
            problem = asm.on_message(spec_topic, msg, ns_to_s(stamp))
            if problem is not None:
                raise DatasetError(f"bag {self.path}: topic '{topic}' message stamped "
                                   f"{ns_to_s(stamp):.9f} s: {problem}")
        self.last_fed[topic] = stamp
        if hasattr(msg, "header"):
            self.stamped_topics.add(topic)

    def _command(self, msg: Any) -> np.ndarray:
        names = tuple(msg.name)
        index = self._joint_index.get(names)
        if index is None:
            missing = [j for j in self.action.joints if j not in names]
            if missing:
                raise DatasetError(f"bag {self.path}: topic '{self.action_topic}' echo lacks "
                                   f"action joint(s) {missing} (it names {list(names)})")
            index = self._joint_index[names] = np.array([names.index(j)
                                                         for j in self.action.joints])
        values = np.asarray(msg.position, dtype=np.float64)
        if values.shape[0] != len(names):
            raise DatasetError(f"bag {self.path}: topic '{self.action_topic}' echo has "
                               f"{values.shape[0]} positions for {len(names)} names")
        command = values[index]
        if not np.isfinite(command).all():
            raise DatasetError(f"bag {self.path}: topic '{self.action_topic}' echo stamped "
                               f"{ns_to_s(header_stamp_ns(msg)):.9f} s has a non-finite command")
        return command

    def _on_echo(self, stamp: int, msg: Any) -> None:
        """A policy decision: both assemblers build (the node built at this tick too, so the
        history advances even when no sample comes of it), then last_action = its command."""
        command = self._command(msg)
        self.stats.echoes += 1
        student, teacher = (asm.build(ns_to_s(stamp)) for asm in self.assemblers)
        if self.episode is None or any(t not in self.last_fed for t in self.users):
            self.stats.early_echoes += 1
        elif max(self.last_fed[t] for t in self.stamped_topics or self.users) != stamp:
            self.stats.unmatched_echoes += 1
        elif student.problem or teacher.problem:
            raise DatasetError(f"bag {self.path}: at stamp {ns_to_s(stamp):.9f} s: "
                               f"{student.problem or teacher.problem}")
        elif is_fallback_frame(getattr(msg.header, "frame_id", "")):
            self.stats.fallback_echoes += 1
        else:
            self.rows[0].append(student.vector)
            self.rows[1].append(teacher.vector)
            self.rows[2].append((command - self._offset) / self._scale)
            self.rows[3].append(self.episode)
        for asm in self.assemblers:
            asm.set_last_action(command)

    def dataset(self, student_size: int, teacher_size: int) -> DistillDataset:
        s, t, a, e = self.rows
        self.stats.samples = len(e)
        ids = sorted(set(e))
        return DistillDataset(
            np.asarray(s, dtype=np.float32).reshape(-1, student_size),
            np.asarray(t, dtype=np.float32).reshape(-1, teacher_size),
            np.asarray(a, dtype=np.float32).reshape(-1, self.action.size),
            np.asarray(e, dtype=np.int64),
            {k: self.returns.get(k, float("nan")) for k in ids}, (self.path,))


def _needed_topics(student_spec: PolicySpec, teacher_spec: PolicySpec) -> dict[str, str]:
    """topic -> who needs it (for the error message)."""
    out: dict[str, str] = {}
    for who, spec in (("student", student_spec), ("teacher", teacher_spec)):
        for term in spec.observation.terms:
            if term.topic is not None:
                out.setdefault(_bare(term.topic), f"the {who} spec's term '{term.name}'")
    return out


def dataset_from_bag(path: str | os.PathLike, student_spec: PolicySpec, teacher_spec: PolicySpec,
                     action_topic: str = POLICY_ACTION, allow_incomplete: bool = False
                     ) -> tuple[DistillDataset, BagStats]:
    """One bag -> (dataset with the bag's own episode ids, replay statistics)."""
    path = str(path)
    _check_specs(student_spec, teacher_spec)
    try:
        info = bag_info(path)
    except BagError as exc:
        raise DatasetError(f"bag {path}: {exc}") from None
    if not info.complete and not allow_incomplete:
        unclosed = "; ".join(info.problems) or ", ".join(info.files)
        raise DatasetError(
            f"bag {path} is half-written (not closed by its recorder: {unclosed}). If the "
            f"recording is still running, wait for it to finish; if the recorder was killed, "
            f"index what was flushed with `python -m policy_distill_ros.recording.recover "
            f"{path}` (or pass allow_incomplete)")
    present = {_bare(name): name for name in info.topics}
    needed = _needed_topics(student_spec, teacher_spec)
    action_topic = _bare(action_topic)
    for topic, who in list(needed.items()) + [(action_topic, "the action echo")]:
        if topic not in present or info.topics[present[topic]].message_count == 0:
            state = "has no messages on" if topic in present else "has no topic"
            raise DatasetError(f"bag {path}: {state} '{topic}' (needed by {who}); the bag has "
                               f"{sorted(present)}")
    has_episode = EPISODE_TOPIC in present
    replay = _Replay(path, student_spec, teacher_spec, action_topic, has_episode)
    wanted = [present[t] for t in list(needed) + [action_topic]
              + ([EPISODE_TOPIC] if has_episode else [])]
    try:
        for item in read_bag(path, wanted):
            replay.on_message(_bare(item.topic), item.message)
    except BagError as exc:
        raise DatasetError(f"bag {path}: {exc}") from None
    replay.run()
    dataset = replay.dataset(student_spec.observation.size, teacher_spec.observation.size)
    stats = replay.stats
    if not len(dataset):
        raise DatasetError(f"bag {path}: no state-action pair joined by exact stamp on "
                           f"'{action_topic}' ({stats.echoes} echoes: {stats.unmatched_echoes} "
                           f"without a state of the same stamp, {stats.early_echoes} before every "
                           f"input topic had a message, {stats.fallback_echoes} fallback)")
    if stats.headerless_by_log_order:
        LOG.warning("bag %s: topic(s) %s without header lost messages (count differs from "
                    "'%s'): matched to frames by log order, which a recorder does not keep "
                    "exactly across topics", path, stats.headerless_by_log_order, EPISODE_TOPIC)
    LOG.info("bag %s: %d samples, %d episodes (%d echoes; skipped %d unmatched, %d early, "
             "%d fallback)", path, stats.samples, stats.episodes, stats.echoes,
             stats.unmatched_echoes, stats.early_echoes, stats.fallback_echoes)
    return dataset, stats


def dataset_from_bags(paths: Sequence[str | os.PathLike] | str | os.PathLike,
                      student_spec: PolicySpec, teacher_spec: PolicySpec,
                      action_topic: str = POLICY_ACTION, allow_incomplete: bool = False,
                      stats: list[BagStats] | None = None) -> DistillDataset:
    """Every bag replayed (see the module docstring) and concatenated; episode ids are made
    unique across bags. `stats`, when given, receives one BagStats per bag."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = list(paths)
    if not paths:
        raise DatasetError("no bags given")
    total: DistillDataset | None = None
    for path in paths:
        part, bag_stats = dataset_from_bag(path, student_spec, teacher_spec, action_topic,
                                           allow_incomplete)
        if stats is not None:
            stats.append(bag_stats)
        total = part if total is None else total.concat(part)
    assert total is not None
    return total


def iter_bag_paths(patterns: Iterable[str]) -> list[str]:
    """Expand globs (bags/*); a pattern matching nothing is an error naming it."""
    import glob
    out: list[str] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
        if not matches:
            raise DatasetError(f"no bag matches {pattern!r}")
        out.extend(m for m in matches if m not in out)
    return out
