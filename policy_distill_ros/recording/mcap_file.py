"""One MCAP file of a rosbag2 bag, written chunk by chunk with every write complete or undone.

Each `write_chunk` appends one self-contained block (schema/channel records not written yet, a
chunk, its message indexes) with a single write to an unbuffered file. If that write fails (disk
full), the file is truncated back to the end of the previous block, so the file always ends on a
record boundary and everything written before stays readable. `close` appends the summary
(schemas, channels, statistics, chunk and metadata indexes) and the footer.
"""
from __future__ import annotations

import os
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from policy_distill_ros.recording import mcap_records as rec

PROFILE = "ros2"
LIBRARY = "policy_distill_ros recorder"

# (channel id, sequence, log time ns, publish time ns, CDR bytes)
PendingMessage = Tuple[int, int, int, int, bytes]
FileOpener = Callable[[str], BinaryIO]


def open_exclusive(path: str) -> BinaryIO:
    """Create a new file for unbuffered binary writing (never overwrite a bag file)."""
    return open(path, "xb", buffering=0)


def _compressor(name: str) -> Callable[[bytes], bytes]:
    if name == "":
        return lambda data: data
    if name == "zstd":
        try:
            from compression import zstd  # type: ignore[import-not-found]  # Python >= 3.14
        except ImportError:
            from backports import zstd  # type: ignore[no-redef]  # installed with rosbags
        return zstd.compress
    raise ValueError(f"chunk compression {name!r} is not supported; use '' or 'zstd'")


@dataclass
class FileStats:
    """What one file holds, for metadata.yaml (`files:` entry) and the statistics record."""

    path: str
    message_count: int = 0
    start_ns: Optional[int] = None
    end_ns: Optional[int] = None
    channel_counts: Dict[int, int] = field(default_factory=dict)

    def add(self, channel_id: int, log_time_ns: int) -> None:
        self.message_count += 1
        self.channel_counts[channel_id] = self.channel_counts.get(channel_id, 0) + 1
        if self.start_ns is None or log_time_ns < self.start_ns:
            self.start_ns = log_time_ns
        if self.end_ns is None or log_time_ns > self.end_ns:
            self.end_ns = log_time_ns


class McapFileWriter:
    """Append-only writer of one `.mcap` file with ROS 2 profile (CDR messages, ros2msg schemas)."""

    def __init__(self, path: str, compression: str = "", metadata: Optional[Mapping[str,
                 Mapping[str, str]]] = None, opener: FileOpener = open_exclusive) -> None:
        self.path = path
        self.compression = compression
        self._compress = _compressor(compression)
        self.stats = FileStats(path=path)
        self._schemas: Dict[int, bytes] = {}      # id -> record bytes
        self._channels: Dict[int, bytes] = {}
        self._written_schemas: set = set()
        self._written_channels: set = set()
        self._chunk_indexes: List[bytes] = []
        self._metadata_indexes: List[bytes] = []
        self._file: Optional[BinaryIO] = opener(path)
        self._offset = 0                          # end of the last complete block
        block = bytearray(rec.MAGIC + rec.header_record(PROFILE, LIBRARY))
        indexes = []
        for name, values in (metadata or {}).items():
            record = rec.metadata_record(name, values)
            indexes.append(rec.metadata_index_record(len(block), len(record), name))
            block += record
        self._append(bytes(block))
        self._metadata_indexes.extend(indexes)

    @property
    def size_bytes(self) -> int:
        return self._offset

    @property
    def closed(self) -> bool:
        return self._file is None

    def add_schema(self, schema_id: int, name: str, encoding: str, data: bytes) -> None:
        self._schemas[schema_id] = rec.schema_record(schema_id, name, encoding, data)

    def add_channel(self, channel_id: int, schema_id: int, topic: str, metadata: Mapping[str, str],
                    message_encoding: str = "cdr") -> None:
        self._channels[channel_id] = rec.channel_record(channel_id, schema_id, topic,
                                                        message_encoding, metadata)

    def write_chunk(self, messages: Sequence[PendingMessage]) -> None:
        """Write new schema/channel records, then `messages` as one chunk, in one write."""
        block = bytearray(self._pending_definitions())
        chunk_index = None
        if messages:
            chunk, chunk_index = self._chunk_block(self._offset + len(block), messages)
            block += chunk
        if block:
            self._append(bytes(block))
        if chunk_index is not None:
            self._chunk_indexes.append(chunk_index)
        for channel_id, _seq, log_ns, _pub, _data in messages:
            self.stats.add(channel_id, log_ns)

    def add_metadata(self, name: str, values: Mapping[str, str]) -> None:
        """An MCAP metadata record (e.g. the serialized rosbag2 metadata written at close)."""
        record = rec.metadata_record(name, values)
        index = rec.metadata_index_record(self._offset, len(record), name)
        self._append(record)
        self._metadata_indexes.append(index)

    def close(self, fsync: bool = True) -> None:
        """Append the summary section and footer; the file is then indexed for every reader."""
        if self._file is None:
            return
        data = bytearray(self._pending_definitions())
        data += rec.data_end_record()
        summary_start = self._offset + len(data)
        summary = bytearray()
        groups: List[Tuple[int, int, int]] = []

        def group(opcode: int, records: Sequence[bytes]) -> None:
            if records:
                groups.append((opcode, summary_start + len(summary), sum(map(len, records))))
                summary.extend(b"".join(records))

        group(rec.OP_SCHEMA, [self._schemas[k] for k in sorted(self._schemas)])
        group(rec.OP_CHANNEL, [self._channels[k] for k in sorted(self._channels)])
        s = self.stats
        group(rec.OP_STATISTICS, [rec.statistics_record(
            s.message_count, len(self._schemas), len(self._channels), len(self._metadata_indexes),
            len(self._chunk_indexes), s.start_ns or 0, s.end_ns or 0, s.channel_counts)])
        group(rec.OP_CHUNK_INDEX, self._chunk_indexes)
        group(rec.OP_METADATA_INDEX, self._metadata_indexes)
        offset_start = summary_start + len(summary)
        for opcode, start, length in groups:
            summary += rec.summary_offset_record(opcode, start, length)
        footer = rec.footer_prefix(summary_start, offset_start)
        crc = zlib.crc32(footer, zlib.crc32(summary))
        self._append(bytes(data + summary + footer) + crc.to_bytes(4, "little") + rec.MAGIC)
        if fsync:
            os.fsync(self._file.fileno())
        self._file.close()
        self._file = None

    def abandon(self) -> None:
        """Close the file as it is (after an error): it ends on the last complete block."""
        if self._file is not None:
            try:
                self._file.close()
            finally:
                self._file = None

    # ------------------------------------------------------------ internals

    def _pending_definitions(self) -> bytes:
        out = bytearray()
        for key in sorted(set(self._schemas) - self._written_schemas):
            out += self._schemas[key]
        for key in sorted(set(self._channels) - self._written_channels):
            out += self._channels[key]
        return bytes(out)

    def _chunk_block(self, chunk_offset: int,
                     messages: Sequence[PendingMessage]) -> Tuple[bytes, bytes]:
        """(chunk record + its message indexes, the chunk index record for the summary)."""
        body = bytearray()
        index: Dict[int, List[Tuple[int, int]]] = {}
        start_ns, end_ns = messages[0][2], messages[0][2]
        pack = rec.MESSAGE_HEAD.pack
        for channel_id, seq, log_ns, pub_ns, data in messages:
            index.setdefault(channel_id, []).append((log_ns, len(body)))
            body += pack(rec.OP_MESSAGE, 22 + len(data), channel_id, seq, log_ns, pub_ns)
            body += data
            if log_ns < start_ns:
                start_ns = log_ns
            elif log_ns > end_ns:
                end_ns = log_ns
        raw = bytes(body)
        payload = self._compress(raw)
        chunk = rec.chunk_record(start_ns, end_ns, len(raw), zlib.crc32(raw), self.compression,
                                 payload)
        index_offsets: Dict[int, int] = {}
        indexes = bytearray()
        for channel_id in sorted(index):
            index_offsets[channel_id] = chunk_offset + len(chunk) + len(indexes)
            indexes += rec.message_index_record(channel_id, index[channel_id])
        chunk_index = rec.chunk_index_record(start_ns, end_ns, chunk_offset, len(chunk),
                                             index_offsets, len(indexes), self.compression,
                                             len(payload), len(raw))
        return chunk + bytes(indexes), chunk_index

    def _append(self, block: bytes) -> None:
        """Write `block` completely or not at all (truncate back on error, then re-raise)."""
        assert self._file is not None, f"{self.path} is closed"
        view = memoryview(block)
        try:
            while view:
                written = self._file.write(view)
                if written is None or written <= 0:
                    raise OSError(f"short write to {self.path}")
                view = view[written:]
        except OSError:
            self._rollback()
            raise
        self._offset += len(block)
        self._written_schemas.update(self._schemas)
        self._written_channels.update(self._channels)

    def _rollback(self) -> None:
        """Cut a partly written block off, so the file ends on the last complete block."""
        try:
            self._file.truncate(self._offset)  # type: ignore[union-attr]
            self._file.seek(self._offset)      # type: ignore[union-attr]
        except OSError:
            pass
