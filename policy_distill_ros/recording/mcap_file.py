"""One MCAP file of a rosbag2 bag, written by the `mcap` library, every block whole or undone.

`mcap.writer.Writer` encodes the records; it writes into `_BlockFile`, which holds them in memory
until the Writer's `flush()` and then appends them to the file with one write. If that write
fails (disk full), the file is truncated back to the end of the previous block, so it always
ends on a record boundary and everything written before stays readable. The Writer's own
indexes then count a chunk that is not in the file, so such a file is left without a summary
(`abandon`); the readers and `recover` handle that like a killed recording.
"""
from __future__ import annotations

import io
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from mcap.writer import CompressionType, IndexType, Writer

PROFILE = "ros2"
LIBRARY = "policy_distill_ros recorder"
COMPRESSION = {"": CompressionType.NONE, "zstd": CompressionType.ZSTD}

# (channel id, sequence, log time ns, publish time ns, CDR bytes)
PendingMessage = tuple[int, int, int, int, bytes]
FileOpener = Callable[[str], BinaryIO]


def open_exclusive(path: str) -> BinaryIO:
    """Create a new file for unbuffered binary writing (never overwrite a bag file)."""
    return open(path, "xb", buffering=0)


class _BlockFile:
    """What the Writer writes to: bytes are held until `flush()`, then written all or none."""

    def __init__(self, path: str, file: BinaryIO) -> None:
        self.path = path
        self.file = file
        self.committed = 0                  # end of the last complete block in the file
        self._pending = io.BytesIO()

    def write(self, data) -> int:
        return self._pending.write(data)

    def tell(self) -> int:
        return self.committed + self._pending.tell()

    def flush(self) -> None:
        block = memoryview(self._pending.getvalue())
        try:
            while block:
                written = self.file.write(block)
                if written is None or written <= 0:
                    raise OSError(f"short write to {self.path}")
                block = block[written:]
        except OSError:
            self._rollback()
            raise
        self.committed = self.tell()
        self._pending = io.BytesIO()

    def _rollback(self) -> None:
        """Cut a partly written block off, so the file ends on the last complete block."""
        self._pending = io.BytesIO()
        try:
            self.file.truncate(self.committed)
            self.file.seek(self.committed)
        except OSError:
            pass


@dataclass
class FileStats:
    """What one file holds, for metadata.yaml (`files:` entry)."""

    path: str
    message_count: int = 0
    start_ns: int | None = None
    end_ns: int | None = None

    def add(self, messages: Sequence[PendingMessage]) -> None:
        if not messages:
            return
        times = [m[2] for m in messages]
        self.message_count += len(times)
        first, last = min(times), max(times)
        self.start_ns = first if self.start_ns is None else min(self.start_ns, first)
        self.end_ns = last if self.end_ns is None else max(self.end_ns, last)


class McapFileWriter:
    """Append-only writer of one `.mcap` file with ROS 2 profile (CDR messages, ros2msg schemas).

    Chunks are cut only by `write_chunk` (the Writer's size limit is never reached), so a chunk
    is exactly what one flush of the recorder wrote.
    """

    def __init__(self, path: str, compression: str = "",
                 metadata: Mapping[str, Mapping[str, str]] | None = None,
                 opener: FileOpener = open_exclusive) -> None:
        if compression not in COMPRESSION:
            raise ValueError(f"chunk compression {compression!r} is not supported; use "
                             f"{' or '.join(map(repr, COMPRESSION))}")
        self.path = path
        self.compression = compression
        self.stats = FileStats(path=path)
        self._schemas: dict[int, int] = {}      # our schema id -> the Writer's
        self._channels: dict[int, int] = {}
        self._broken = False                    # a block failed: the Writer's indexes are wrong
        self._file: _BlockFile | None = _BlockFile(path, opener(path))
        self._writer = Writer(self._file, chunk_size=1 << 62,
                              compression=COMPRESSION[compression], index_types=IndexType.ALL)
        self._writer.start(profile=PROFILE, library=LIBRARY)
        for name, values in (metadata or {}).items():
            self._writer.add_metadata(name, dict(values))
        self._commit()

    @property
    def size_bytes(self) -> int:
        return self._file.committed if self._file is not None else 0

    @property
    def closed(self) -> bool:
        return self._file is None

    def add_schema(self, schema_id: int, name: str, encoding: str, data: bytes) -> None:
        """Declare a schema once (again: ignored); it reaches the file with the next chunk."""
        if schema_id not in self._schemas:
            self._schemas[schema_id] = self._writer.register_schema(name, encoding, data)

    def add_channel(self, channel_id: int, schema_id: int, topic: str, metadata: Mapping[str, str],
                    message_encoding: str = "cdr") -> None:
        if channel_id not in self._channels:
            self._channels[channel_id] = self._writer.register_channel(
                topic, message_encoding, self._schemas[schema_id], dict(metadata))

    def write_chunk(self, messages: Sequence[PendingMessage]) -> None:
        """`messages` as one chunk (with any new schema/channel records), in one write."""
        add = self._writer.add_message
        channels = self._channels
        for channel_id, seq, log_ns, pub_ns, data in messages:
            add(channels[channel_id], log_ns, data, pub_ns, seq)
        self._commit(self._writer.flush)
        self.stats.add(messages)

    def add_metadata(self, name: str, values: Mapping[str, str]) -> None:
        """An MCAP metadata record (e.g. the serialized rosbag2 metadata written at close)."""
        self._writer.add_metadata(name, dict(values))
        self._commit()

    def close(self, fsync: bool = True) -> None:
        """Append the summary section and footer; the file is then indexed for every reader.

        After a failed write there is no true summary to write: the file is left as it is.
        """
        if self._file is None:
            return
        if self._broken:
            self.abandon()
            return
        self._commit(self._writer.finish)
        if fsync:
            os.fsync(self._file.file.fileno())
        self._file.file.close()
        self._file = None

    def _commit(self, step: Callable[[], None] | None = None) -> None:
        """Run a Writer step (its output stays in memory), then write that block to the file."""
        assert self._file is not None and not self._broken, f"{self.path} is closed"
        try:
            if step is not None:
                step()
            self._file.flush()
        except OSError:
            self._broken = True
            raise

    def abandon(self) -> None:
        """Close the file as it is (after an error): it ends on the last complete block."""
        if self._file is not None:
            try:
                self._file.file.close()
            finally:
                self._file = None
