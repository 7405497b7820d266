"""A rosbag2 directory with MCAP storage, fed with serialized (CDR) messages, never decoded.

`write()` is what a subscription callback calls: it appends (channel, time, bytes) to a list
under a lock and returns. A writer thread wakes every `flush_period_s`, turns what arrived into
one MCAP chunk, appends it with a single write, and rewrites metadata.yaml atomically. So a
`kill -9` loses at most the last flush period, and the directory stays readable:
`read_bag`/`bag_info` read such a bag as it is; `recover()` adds the missing MCAP summary and
footer for tools that insist on one. Files are split at `max_file_size_mb`.

A write error (disk full) stops the recording: the failed block is cut off again, the bag keeps
everything up to the last flush, and `error` says which bag, why, and what was kept.
"""
from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from policy_distill_ros.core.contract import normalize_type_name
from policy_distill_ros.recording import bag_metadata as meta
from policy_distill_ros.recording.mcap_file import FileOpener, McapFileWriter, open_exclusive
from policy_distill_ros.recording.msg_types import message_definition

SPECS_METADATA_NAME = "policy_distill_ros"


class BagWriteError(RuntimeError):
    """Recording stopped (e.g. disk full); the message names the bag and what was kept."""


CHUNK_BYTES = 1 << 18   # message bytes per MCAP chunk (readers load a chunk at a time)


def _chunks(batch: list, limit_bytes: int):
    """`batch` in order, cut into runs of at most `limit_bytes` of message data (at least one
    message each); yields one empty run for an empty batch (definitions only)."""
    start, size = 0, 0
    for i, entry in enumerate(batch):
        if size and size + len(entry[4]) > limit_bytes:
            yield batch[start:i]
            start, size = i, 0
        size += len(entry[4])
    yield batch[start:]


@dataclass
class BagWriterConfig:
    """Where and how to write one bag."""

    path: str                                   # the bag directory; must not exist yet
    flush_period_s: float = 0.5                 # a kill loses at most this much
    max_file_size_mb: float = 0.0               # split into <name>_<i>.mcap files; 0 = never
    compression: str = "none"                   # chunk compression: none | zstd
    max_pending_messages: int = 1_000_000       # beyond this (writer stalled) messages are dropped
    custom_data: dict[str, str] = field(default_factory=dict)  # specs, teacher hash, ...

    def __post_init__(self) -> None:
        if not self.path:
            raise ValueError("BagWriterConfig.path is empty")
        if not 0.0 < self.flush_period_s <= 1.0:
            raise ValueError(f"BagWriterConfig.flush_period_s is {self.flush_period_s}; expected "
                             f"0 < flush_period_s <= 1.0 (a killed recorder loses at most this)")
        if self.max_file_size_mb < 0:
            raise ValueError(f"BagWriterConfig.max_file_size_mb is {self.max_file_size_mb}; "
                             f"expected >= 0 (0 = no split)")
        if self.compression not in ("none", "zstd"):
            raise ValueError(f"BagWriterConfig.compression is {self.compression!r}; expected "
                             f"'none' or 'zstd'")
        if self.max_pending_messages < 1:
            raise ValueError("BagWriterConfig.max_pending_messages must be >= 1")
        for key, value in self.custom_data.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise ValueError(f"BagWriterConfig.custom_data[{key!r}] must map str to str")


@dataclass(frozen=True)
class _Topic:
    channel_id: int
    schema_id: int
    name: str
    msgtype: str
    msgdef: str
    type_hash: str
    qos: str


class BagWriter:
    """Writes one bag; thread-safe `add_topic`/`write`; `close()` (or `with`) finishes it."""

    def __init__(self, config: BagWriterConfig, *,
                 file_opener: FileOpener = open_exclusive) -> None:
        self.config = config
        self.path = os.path.abspath(config.path)
        self._opener = file_opener
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._pending: list[tuple[int, int, int, int, bytes]] = []
        self._topics: dict[str, _Topic] = {}
        self._schema_ids: dict[str, int] = {}
        self._sequence = 0
        self._dropped = 0
        self._written = 0
        self._flush_requests = 0
        self._flushes_done = 0
        self._closing = False
        self._error: BagWriteError | None = None
        self._file: McapFileWriter | None = None
        self._files: list[meta.FileEntry] = []
        self._topic_counts: dict[int, int] = {}
        self._thread: threading.Thread | None = None
        self._topics_in_yaml = 0

    # ------------------------------------------------------------ public API

    def open(self) -> BagWriter:
        if os.path.exists(self.path):
            raise FileExistsError(f"bag directory {self.path} exists already; a recorder never "
                                  f"overwrites a bag")
        os.makedirs(self.path)
        self._open_next_file()
        self._write_metadata_yaml()
        self._thread = threading.Thread(target=self._run, name="bag-writer", daemon=True)
        self._thread.start()
        return self

    def add_topic(self, topic: str, msgtype: str, qos: Sequence[meta.OfferedQos] = (),
                  msgdef: str | None = None, type_hash: str | None = None) -> int:
        """Register a topic (definition from the typestore unless given); returns its channel id."""
        msgtype = normalize_type_name(msgtype)
        if msgdef is None or type_hash is None:
            msgdef, type_hash = message_definition(msgtype)
        with self._lock:
            existing = self._topics.get(topic)
            if existing is not None:
                if existing.msgtype != msgtype:
                    raise ValueError(f"topic {topic} is already recorded as {existing.msgtype}, "
                                     f"not {msgtype}")
                return existing.channel_id
            schema_id = self._schema_ids.setdefault(msgtype, len(self._schema_ids) + 1)
            entry = _Topic(len(self._topics) + 1, schema_id, topic, msgtype, msgdef, type_hash,
                           meta.qos_string(qos))
            self._topics[topic] = entry
            self._topic_counts[entry.channel_id] = 0
            self._flush_requests += 1   # the new channel reaches the file (and yaml) promptly
            self._wake.notify()
        return entry.channel_id

    def write(self, channel_id: int, log_time_ns: int, data: bytes,
              publish_time_ns: int | None = None) -> bool:
        """Queue one serialized message; False when it was not kept (stopped or overloaded)."""
        with self._lock:
            if self._error is not None or self._closing:
                self._dropped += 1
                return False
            if len(self._pending) >= self.config.max_pending_messages:
                self._dropped += 1
                return False
            self._sequence += 1
            self._pending.append((channel_id, self._sequence & 0xFFFFFFFF, log_time_ns,
                                  log_time_ns if publish_time_ns is None else publish_time_ns,
                                  bytes(data)))
        return True

    def flush(self, timeout_s: float = 10.0) -> None:
        """Block until everything queued so far is on disk (raises the writer's error if any)."""
        with self._wake:
            self._flush_requests += 1
            target = self._flush_requests
            self._wake.notify()
            deadline = time.monotonic() + timeout_s
            while self._flushes_done < target and self._error is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._thread is None or not self._thread.is_alive():
                    break
                self._wake.wait(remaining)
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Write what is queued, the MCAP summaries and the final metadata.yaml."""
        with self._wake:
            if self._closing:
                return
            self._closing = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join()
        if self._error is None and self._file is not None:
            try:
                self._finish_file()
                self._write_metadata_yaml()
            except OSError as exc:
                self._fail(exc, "closing")
        elif self._file is not None:
            self._file.abandon()

    @property
    def error(self) -> BagWriteError | None:
        return self._error

    @property
    def dropped(self) -> int:
        return self._dropped

    @property
    def written(self) -> int:
        """Messages on disk (flushed)."""
        return self._written

    @property
    def pending(self) -> int:
        return len(self._pending)

    def topic_counts(self) -> dict[str, int]:
        with self._lock:
            return {t.name: self._topic_counts[t.channel_id] for t in self._topics.values()}

    def __enter__(self) -> BagWriter:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ writer thread

    def _run(self) -> None:
        period = self.config.flush_period_s
        next_flush = time.monotonic() + period
        while True:
            with self._wake:
                while (not self._closing and self._flushes_done >= self._flush_requests
                       and time.monotonic() < next_flush):
                    self._wake.wait(max(0.0, next_flush - time.monotonic()))
                batch, self._pending = self._pending, []
                requests = self._flush_requests
                closing = self._closing
                topics = list(self._topics.values())
            next_flush = time.monotonic() + period
            try:
                self._write_batch(batch, topics)
            except OSError as exc:
                self._fail(exc, "writing")
            with self._wake:
                self._flushes_done = requests
                self._wake.notify_all()
            if closing or self._error is not None:
                return

    def _write_batch(self, batch: list[tuple[int, int, int, int, bytes]],
                     topics: list[_Topic]) -> None:
        assert self._file is not None
        for topic in topics:
            self._declare(self._file, topic)
        if not batch and len(topics) == self._topics_in_yaml:
            return
        # A backlog goes out in chunks of at most CHUNK_BYTES, each counted once written: a full
        # disk then costs the last chunk, not everything queued since the last flush.
        for part in _chunks(batch, CHUNK_BYTES):
            self._file.write_chunk(part)
            for channel_id, _seq, _t, _p, _d in part:
                self._topic_counts[channel_id] += 1
            self._written += len(part)
            self._sync_file_entry()
        limit = self.config.max_file_size_mb * 1e6
        if limit and self._file.size_bytes >= limit:
            self._finish_file()
            self._open_next_file()
        self._write_metadata_yaml()

    # ------------------------------------------------------------ files

    def _declare(self, file: McapFileWriter, topic: _Topic) -> None:
        file.add_schema(topic.schema_id, topic.msgtype, "ros2msg", topic.msgdef.encode("utf-8"))
        file.add_channel(topic.channel_id, topic.schema_id, topic.name,
                         {"offered_qos_profiles": topic.qos})

    def _open_next_file(self) -> None:
        name = f"{os.path.basename(self.path)}_{len(self._files)}.mcap"
        specs = dict(self.config.custom_data)
        self._file = McapFileWriter(os.path.join(self.path, name),
                                    compression=self._compression_name(),
                                    metadata={SPECS_METADATA_NAME: specs} if specs else None,
                                    opener=self._opener)
        with self._lock:
            topics = list(self._topics.values())
        for topic in topics:
            self._declare(self._file, topic)
        self._files.append(meta.FileEntry(path=name))

    def _finish_file(self) -> None:
        assert self._file is not None
        self._file.add_metadata("rosbag2", {"serialized_metadata": self._metadata().to_yaml()})
        self._file.close()
        self._sync_file_entry()

    def _sync_file_entry(self) -> None:
        assert self._file is not None
        entry, stats = self._files[-1], self._file.stats
        entry.message_count, entry.start_ns, entry.end_ns = (stats.message_count, stats.start_ns,
                                                             stats.end_ns)

    def _compression_name(self) -> str:
        return "" if self.config.compression == "none" else self.config.compression

    def _metadata(self) -> meta.BagMetadata:
        with self._lock:
            topics = list(self._topics.values())
        return meta.BagMetadata(
            topics=[meta.TopicEntry(t.name, t.msgtype, t.type_hash, t.qos,
                                    self._topic_counts[t.channel_id]) for t in topics],
            files=[meta.FileEntry(f.path, f.message_count, f.start_ns, f.end_ns)
                   for f in self._files],
            custom_data=dict(self.config.custom_data))

    def _write_metadata_yaml(self) -> None:
        metadata = self._metadata()
        meta.write_metadata(self.path, metadata)
        self._topics_in_yaml = len(metadata.topics)

    def _fail(self, exc: OSError, doing: str) -> None:
        reason = "disk full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
        file_name = os.path.basename(self._file.path) if self._file is not None else "?"
        first = min((f.start_ns for f in self._files if f.start_ns is not None), default=None)
        last = max((f.end_ns for f in self._files if f.end_ns is not None), default=None)
        span = (f", log times {first}..{last} ns" if first is not None else "")
        with self._lock:
            lost = len(self._pending)
            self._pending = []
        error = BagWriteError(
            f"recording to bag {self.path} stopped: {reason} while {doing} {file_name} "
            f"({exc}). Kept {self._written} messages in {len(self._files)} file(s){span}, "
            f"everything up to the last flush; {lost} queued messages were not written. The bag "
            f"stays readable (read_bag/bag_info; recover() adds the MCAP index for other tools).")
        error.__cause__ = exc
        if self._file is not None:
            try:
                self._file.close(fsync=False)   # a summary if the .mcap itself is intact
            except OSError:
                self._file.abandon()            # ends on the last complete chunk anyway
        try:
            self._write_metadata_yaml()
        except OSError:
            pass   # the previous metadata.yaml (atomic) still describes a prefix of the data
        with self._wake:
            self._error = error
            self._wake.notify_all()
