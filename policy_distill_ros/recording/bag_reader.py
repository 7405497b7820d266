"""Read a rosbag2 MCAP bag without ROS: messages in log-time order, counts, specs.

Works on a bag whose recorder was killed (no MCAP summary, torn last write, stale
metadata.yaml): the files are walked record by record and whatever was flushed is read. Messages
are decoded with rosbags' typestore, so they have the attribute names of rclpy messages and
`core/fields.py` reads them like live ones.
"""
from __future__ import annotations

import glob
import heapq
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from policy_distill_ros.core.contract import MessageTypeError, normalize_type_name, ns_to_s
from policy_distill_ros.recording import bag_metadata as meta
from policy_distill_ros.recording.bag_writer import SPECS_METADATA_NAME
from policy_distill_ros.recording.mcap_scan import (
    McapFileError,
    McapScan,
    chunk_messages,
    read_chunk,
    scan_mcap,
)
from policy_distill_ros.recording.msg_types import decode_cdr, default_typestore, register_schemas


class BagError(ValueError):
    """A bag that is missing, not rosbag2/MCAP, or damaged; the message names the file."""


class BagMessage(NamedTuple):
    topic: str
    msgtype: str
    log_time_ns: int
    message: Any          # deserialized message, or CDR bytes from read_bag_raw


@dataclass
class TopicInfo:
    name: str
    msgtype: str
    message_count: int = 0


@dataclass
class BagInfo:
    path: str
    files: list[str]
    topics: dict[str, TopicInfo]
    message_count: int
    start_ns: int | None
    end_ns: int | None
    custom_data: dict[str, str] = field(default_factory=dict)  # specs, teacher hash, ...
    complete: bool = True          # every file closed properly (has its MCAP summary)
    problems: list[str] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        if self.start_ns is None or self.end_ns is None:
            return 0.0
        return ns_to_s(self.end_ns - self.start_ns)


def bag_files(path: str) -> list[str]:
    """The .mcap files of a bag directory (metadata.yaml order, then unlisted ones), or [path]."""
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise BagError(f"bag {path} does not exist")
    listed: list[str] = []
    yaml_path = os.path.join(path, meta.METADATA_FILE)
    if os.path.exists(yaml_path):
        try:
            info = meta.read_metadata(path)
        except (ValueError, OSError) as exc:
            raise BagError(str(exc)) from None
        storage = info.get("storage_identifier", "mcap")
        if storage != "mcap":
            raise BagError(f"{yaml_path}: storage '{storage}' is not supported; only MCAP bags")
        for rel in info.get("relative_file_paths") or []:
            full = os.path.join(path, os.path.basename(str(rel)))
            if not os.path.exists(full):
                raise BagError(f"bag {path}: file {full} named in metadata.yaml is missing")
            listed.append(full)
    # A killed recorder may have opened a split file after the last metadata.yaml rewrite.
    extra = sorted((p for p in glob.glob(os.path.join(path, "*.mcap")) if p not in listed),
                   key=_split_index)
    files = listed + extra
    if not files:
        raise BagError(f"bag {path} has no .mcap files")
    return files


def _split_index(path: str) -> tuple[int, str]:
    match = re.search(r"_(\d+)\.mcap$", path)
    return (int(match.group(1)) if match else -1, path)


def scan_bag(path: str) -> list[McapScan]:
    """Every MCAP file of a bag, scanned, channels defined only inside chunks found."""
    scans = []
    for file_path in bag_files(path):
        try:
            scan = scan_mcap(file_path)
            _find_channels_in_chunks(scan)
        except McapFileError as exc:
            raise BagError(str(exc)) from None
        scans.append(scan)
    return scans


def _find_channels_in_chunks(scan: McapScan) -> None:
    """Channels defined only inside chunks (rosbag2's writer, no summary): read chunks until
    known."""
    needed = {c for chunk in scan.chunks for c in chunk.counts} - set(scan.channels)
    if not needed and (scan.channels or not scan.chunks):
        return
    with open(scan.path, "rb") as f:
        for chunk in scan.chunks:
            chunk_messages(read_chunk(f, scan.path, chunk), scan, scan.path, chunk.record_offset)
            if needed <= set(scan.channels) and scan.channels:
                return


def _topic_of(scan: McapScan, channel_id: int) -> tuple[str, str]:
    channel = scan.channels.get(channel_id)
    if channel is None:
        raise BagError(f"{scan.path}: message on channel {channel_id}, which no channel record "
                       f"defines")
    schema = scan.schemas.get(channel.schema_id)
    if schema is None:
        raise BagError(f"{scan.path}: channel {channel.topic} uses schema {channel.schema_id}, "
                       f"which no schema record defines")
    return channel.topic, schema.name


def _wanted(topics: Iterable[str] | None, scans: list[McapScan]) -> set | None:
    """Resolve requested names ('imu' matches '/imu'); unknown names are an error, not silence."""
    if topics is None:
        return None
    known = {c.topic for s in scans for c in s.channels.values()}
    wanted = set()
    for name in topics:
        matches = {name, "/" + name.lstrip("/")} & known
        if not matches:
            raise BagError(f"topic {name!r} is not in bag {scans[0].path if scans else ''}; "
                           f"it has {sorted(known)}")
        wanted |= matches
    return wanted


def read_bag_raw(path: str, topics: Iterable[str] | None = None) -> Iterator[BagMessage]:
    """(topic, msgtype, log_time_ns, CDR bytes) in log-time order over every file and chunk.

    Chunks are opened lazily, only when their start time is reached, so memory stays at a few
    chunks however long the bag is.
    """
    scans = scan_bag(path)
    wanted = _wanted(topics, scans)
    heap: list[tuple] = []     # (time, 0=chunk to open | 1=message, order, position, payload)
    order = 0
    for file_index, scan in enumerate(scans):
        for chunk in scan.chunks:
            if wanted is not None and chunk.indexes_complete and not any(
                    scan.channels.get(c) is not None and scan.channels[c].topic in wanted
                    for c in chunk.counts):
                continue
            heap.append((chunk.start_ns, 0, order, 0, (file_index, chunk)))
            order += 1
        if scan.loose:
            msgs = sorted(((m.log_time_ns, m.channel_id, m.data) for m in scan.loose),
                          key=lambda m: m[0])
            heap.append((msgs[0][0], 1, order, 0, (file_index, msgs)))
            order += 1
    heapq.heapify(heap)
    handles: dict[int, Any] = {}
    try:
        while heap:
            time_ns, kind, key, pos, payload = heapq.heappop(heap)
            file_index = payload[0]
            scan = scans[file_index]
            if kind == 0:
                chunk = payload[1]
                handle = handles.get(file_index)
                if handle is None:
                    handle = handles[file_index] = open(scan.path, "rb")
                try:
                    raw = read_chunk(handle, scan.path, chunk)
                    msgs = chunk_messages(raw, scan, scan.path, chunk.record_offset)
                except McapFileError as exc:
                    raise BagError(str(exc)) from None
                msgs = sorted(((t, c, d) for c, t, d in msgs), key=lambda m: m[0])
                if msgs:
                    heapq.heappush(heap, (msgs[0][0], 1, key, 0, (file_index, msgs)))
                continue
            msgs = payload[1]
            log_ns, channel_id, data = msgs[pos]
            if pos + 1 < len(msgs):
                heapq.heappush(heap, (msgs[pos + 1][0], 1, key, pos + 1, payload))
            topic, msgtype = _topic_of(scan, channel_id)
            if wanted is None or topic in wanted:
                yield BagMessage(topic, msgtype, log_ns, data)
    finally:
        for handle in handles.values():
            handle.close()


def read_bag(path: str, topics: Iterable[str] | None = None) -> Iterator[BagMessage]:
    """(topic, msgtype, log_time_ns, deserialized message) in log-time order."""
    scans = scan_bag(path)
    store = default_typestore()
    schemas = [(s.name, s.encoding, s.data) for scan in scans for s in scan.schemas.values()]
    if any(_normalized(name) not in store.fielddefs for name, _e, _d in schemas):
        from rosbags.typesys import Stores, get_typestore
        store = get_typestore(Stores.ROS2_KILTED)   # a private copy to teach custom types
        register_schemas(store, schemas)
    for item in read_bag_raw(path, topics):
        msgtype = _normalized(item.msgtype)
        try:
            message = decode_cdr(store, item.message, msgtype)
        except Exception as exc:  # noqa: BLE001 - name the message that does not decode
            raise BagError(f"bag {path}: message on {item.topic} at log time {item.log_time_ns} "
                           f"ns does not decode as {msgtype} ({exc})") from None
        yield BagMessage(item.topic, msgtype, item.log_time_ns, message)


def _normalized(msgtype: str) -> str:
    """A bag's type name in the contract's form; a name that is not a ROS type stays as it is
    (another tool's schema), to fail only if a message of it is decoded."""
    try:
        return normalize_type_name(msgtype)
    except MessageTypeError:
        return msgtype


def bag_info(path: str) -> BagInfo:
    """Counts per topic, time span, recorded specs, and whether every file was closed."""
    scans = scan_bag(path)
    topics: dict[str, TopicInfo] = {}
    total, starts, ends, problems = 0, [], [], []
    custom: dict[str, str] = {}
    if os.path.isdir(path) and os.path.exists(os.path.join(path, meta.METADATA_FILE)):
        custom.update({str(k): str(v) for k, v in
                       (meta.read_metadata(path).get("custom_data") or {}).items()})
    for scan in scans:
        custom.update(scan.metadata.get(SPECS_METADATA_NAME, {}))
        if scan.problem and not scan.complete:
            problems.append(f"{scan.path}: {scan.problem}")
        counts: dict[int, int] = {}
        for chunk in scan.chunks:
            chunk_counts = chunk.counts
            if not chunk.indexes_complete:   # indexes may be torn: count inside the chunk
                with open(scan.path, "rb") as f:
                    try:
                        msgs = chunk_messages(read_chunk(f, scan.path, chunk), scan, scan.path,
                                              chunk.record_offset)
                    except McapFileError as exc:
                        raise BagError(str(exc)) from None
                chunk_counts = {}
                for channel_id, _t, _d in msgs:
                    chunk_counts[channel_id] = chunk_counts.get(channel_id, 0) + 1
            for channel_id, n in chunk_counts.items():
                counts[channel_id] = counts.get(channel_id, 0) + n
            if sum(chunk_counts.values()):
                starts.append(chunk.start_ns)
                ends.append(chunk.end_ns)
        for m in scan.loose:
            counts[m.channel_id] = counts.get(m.channel_id, 0) + 1
            starts.append(m.log_time_ns)
            ends.append(m.log_time_ns)
        for channel in scan.channels.values():
            topic, msgtype = _topic_of(scan, channel.id)
            info = topics.setdefault(topic, TopicInfo(topic, _normalized(msgtype)))
            info.message_count += counts.get(channel.id, 0)
            total += counts.get(channel.id, 0)
    return BagInfo(path=path, files=[s.path for s in scans], topics=topics, message_count=total,
                   start_ns=min(starts) if starts else None, end_ns=max(ends) if ends else None,
                   custom_data=custom, complete=all(s.complete for s in scans),
                   problems=problems)
