"""Find what an MCAP file holds with the `mcap` library, also when its writer was killed.

A closed file is read from its summary: schemas, channels, chunk indexes, metadata. A file
without one is walked with `mcap`'s StreamReader, which yields every complete record and then
fails at the torn end of a killed recording (EndOfFile, or struct.error for a cut inside a
fixed-size field); that end goes to `problem`, not to the caller as an error.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from typing import BinaryIO

from mcap.data_stream import ReadDataStream
from mcap.exceptions import McapError
from mcap.reader import SeekingReader
from mcap.records import (
    Channel,
    Chunk,
    DataEnd,
    Footer,
    Header,
    McapRecord,
    Message,
    MessageIndex,
    Metadata,
    Schema,
)
from mcap.stream_reader import MAGIC_SIZE, StreamReader, breakup_chunk
from mcap.writer import MCAP0_MAGIC

RECORD_PREFIX_SIZE = 9      # opcode (1 byte) and content length (8 bytes)
# What a damaged or cut-off record raises inside `mcap`'s readers.
DECODE_ERRORS = (McapError, struct.error, ValueError, EOFError)


class McapFileError(ValueError):
    """A file that is missing, is not MCAP, or is damaged before its end; names the file."""


@dataclass
class ChunkRef:
    """One chunk record: where it is, what time span it covers, how many messages per channel."""

    record_offset: int            # offset of the chunk record's opcode
    record_length: int            # opcode + length prefix + content
    start_ns: int
    end_ns: int
    compression: str              # "" (none), "zstd" or "lz4"
    counts: dict[int, int] = field(default_factory=dict)          # channel -> messages
    # False for the last chunk of an unclosed file: the write may have been cut inside its
    # message indexes, so `counts` may miss channels; count from the chunk's content instead.
    indexes_complete: bool = True


@dataclass
class LooseMessage:
    """A message record outside any chunk (allowed by the spec, not written by our recorder)."""

    channel_id: int
    log_time_ns: int
    data: bytes


@dataclass
class McapScan:
    path: str
    header: Header | None = None
    schemas: dict[int, Schema] = field(default_factory=dict)
    channels: dict[int, Channel] = field(default_factory=dict)
    chunks: list[ChunkRef] = field(default_factory=list)
    loose: list[LooseMessage] = field(default_factory=list)
    metadata: dict[str, dict[str, str]] = field(default_factory=dict)
    data_end: int = MAGIC_SIZE    # end of the last complete data-section record
    complete: bool = False        # summary and footer present
    problem: str | None = None # e.g. the torn end of a killed recording


def scan_mcap(path: str) -> McapScan:
    """What `path` holds; McapFileError for a missing, non-MCAP or damaged file."""
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise McapFileError(f"cannot open MCAP file {path}: {exc.strerror or exc}") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(MAGIC_SIZE)
        if head != MCAP0_MAGIC:
            what = "empty" if not head else "not an MCAP file (wrong magic bytes)"
            raise McapFileError(f"{path} is {what}")
        scan = McapScan(path=path)
        if not _from_summary(f, scan, size):
            _walk(f, scan, size)
    return scan


def _from_summary(f: BinaryIO, scan: McapScan, size: int) -> bool:
    """Fill `scan` from the summary of a closed file; False when there is none to use."""
    f.seek(max(0, size - MAGIC_SIZE))
    if f.read(MAGIC_SIZE) != MCAP0_MAGIC or size < 2 * MAGIC_SIZE + RECORD_PREFIX_SIZE:
        return False
    try:
        f.seek(0)
        reader = SeekingReader(f)
        summary = reader.get_summary()
        if summary is None:
            return False
        if not summary.chunk_indexes and (summary.statistics is None
                                          or summary.statistics.message_count > 0):
            return False    # messages no chunk index finds (loose ones, say): walk the records
        scan.header = reader.get_header()
        scan.schemas.update(summary.schemas)
        scan.channels.update(summary.channels)
        for record in reader.iter_metadata():
            scan.metadata.setdefault(record.name, {}).update(record.metadata)
        for index in summary.chunk_indexes:
            chunk = ChunkRef(index.chunk_start_offset, index.chunk_length,
                             index.message_start_time, index.message_end_time, index.compression)
            for channel_id, offset in index.message_index_offsets.items():
                chunk.counts[channel_id] = _index_entries(f, offset)
            scan.chunks.append(chunk)
    except DECODE_ERRORS as exc:
        raise McapFileError(f"{scan.path}: the summary is garbled ({exc})") from None
    scan.complete = True
    return True


def _index_entries(f: BinaryIO, offset: int) -> int:
    """Entries of the message index record at `offset`, from its header alone."""
    f.seek(offset + RECORD_PREFIX_SIZE)
    stream = ReadDataStream(f)
    stream.read2()                        # channel id
    return stream.read4() // 16           # (log time, offset) pairs of 8 + 8 bytes


def _walk(f: BinaryIO, scan: McapScan, size: int) -> None:
    """Read the records in order up to the data-end record, the footer, or the torn end."""
    f.seek(0)
    start = MAGIC_SIZE                    # where the record being read begins
    last: ChunkRef | None = None
    try:
        for record in StreamReader(f, emit_chunks=True).records:
            end = f.tell()
            if isinstance(record, Chunk):
                last = ChunkRef(start, end - start, record.message_start_time,
                                record.message_end_time, record.compression)
                scan.chunks.append(last)
            elif isinstance(record, MessageIndex):
                if last is not None:
                    last.counts[record.channel_id] = len(record.records)
            else:
                last = None
                if isinstance(record, (DataEnd, Footer)):
                    scan.complete = _has_footer(f, size)
                    if not scan.complete:
                        scan.problem = "data-end record present but the footer is missing"
                    return
                _top_level(scan, record)
            start = scan.data_end = end
    except DECODE_ERRORS as exc:
        if f.tell() < size:
            raise McapFileError(f"{scan.path} is garbled at offset {start} ({exc})") from None
        scan.problem = ("no summary or footer: the writer did not close the file"
                        if start == size else
                        f"torn record at offset {start} (the file ends at {size}); recorder "
                        f"killed?")
    if last is not None:
        last.indexes_complete = False


def _has_footer(f: BinaryIO, size: int) -> bool:
    """True when the file ends with a footer and the closing magic (a finished file)."""
    f.seek(max(0, size - MAGIC_SIZE))
    if f.read(MAGIC_SIZE) != MCAP0_MAGIC:
        return False
    try:
        f.seek(0)
        SeekingReader(f).get_summary()    # reads and checks the footer record
    except DECODE_ERRORS:
        return False
    return True


def _top_level(scan: McapScan, record: McapRecord) -> None:
    if isinstance(record, Header):
        scan.header = record
    elif isinstance(record, Schema):
        scan.schemas[record.id] = record
    elif isinstance(record, Channel):
        scan.channels[record.id] = record
    elif isinstance(record, Metadata):
        scan.metadata.setdefault(record.name, {}).update(record.metadata)
    elif isinstance(record, Message):
        scan.loose.append(LooseMessage(record.channel_id, record.log_time, record.data))


def read_chunk(f: BinaryIO, path: str, chunk: ChunkRef) -> list[McapRecord]:
    """The records inside a chunk, decompressed and checked against its CRC."""
    f.seek(chunk.record_offset + RECORD_PREFIX_SIZE)
    try:
        record = Chunk.read(ReadDataStream(f))
        return breakup_chunk(record, validate_crc=True)
    except Exception as exc:   # zstandard's ZstdError derives from Exception alone
        raise McapFileError(f"{path}: chunk at offset {chunk.record_offset} is corrupt "
                            f"({exc})") from exc


def chunk_messages(records: list[McapRecord], scan: McapScan, path: str,
                   offset: int) -> list[tuple[int, int, bytes]]:
    """(channel id, log time ns, data) of every message in a chunk, in record order.

    Schema and channel records inside the chunk (where `mcap`'s Writer puts them) are added to
    `scan` on the way.
    """
    out: list[tuple[int, int, bytes]] = []
    for record in records:
        if isinstance(record, Message):
            out.append((record.channel_id, record.log_time, record.data))
        elif isinstance(record, (Schema, Channel)):
            _top_level(scan, record)
    return out
