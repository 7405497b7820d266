"""Find what an MCAP file holds by walking its records, tolerating a torn end.

A linear walk (not the summary) is the one path that works for complete files and for files
whose writer was killed: it stops at the data-end record, at the end of the file, or at a record
that runs past the end (the torn last write), and says so in `problem`.
"""
from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO, Dict, List, Optional, Tuple

from policy_distill_ros.recording import mcap_records as rec


class McapFileError(ValueError):
    """A file that is missing, is not MCAP, or is damaged before its end; names the file."""


@dataclass
class ChunkRef:
    """One chunk record: where it is, what time span it covers, and its message indexes."""

    record_offset: int            # offset of the chunk record's opcode
    record_length: int            # opcode + length prefix + content
    start_ns: int
    end_ns: int
    uncompressed_size: int
    crc: int
    compression: str
    data_offset: int
    data_size: int
    index_offsets: Dict[int, int] = field(default_factory=dict)   # channel -> index record offset
    index_length: int = 0
    counts: Dict[int, int] = field(default_factory=dict)          # channel -> messages
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
    schemas: Dict[int, rec.SchemaRec] = field(default_factory=dict)
    channels: Dict[int, rec.ChannelRec] = field(default_factory=dict)
    chunks: List[ChunkRef] = field(default_factory=list)
    loose: List[LooseMessage] = field(default_factory=list)
    metadata: Dict[str, Dict[str, str]] = field(default_factory=dict)
    data_end: int = 0             # end of the last complete data-section record
    complete: bool = False        # data-end record, summary and footer present
    problem: Optional[str] = None # e.g. the torn end of a killed recording


def _read_exact(f: BinaryIO, n: int) -> Optional[bytes]:
    data = f.read(n)
    return data if len(data) == n else None


def scan_mcap(path: str) -> McapScan:
    """Walk the data section of `path`; McapFileError for a missing or non-MCAP file."""
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise McapFileError(f"cannot open MCAP file {path}: {exc.strerror or exc}") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(len(rec.MAGIC))
        if head != rec.MAGIC:
            what = "empty" if not head else "not an MCAP file (wrong magic bytes)"
            raise McapFileError(f"{path} is {what}")
        scan = McapScan(path=path, data_end=len(rec.MAGIC))
        pos = len(rec.MAGIC)
        last_chunk: Optional[ChunkRef] = None
        while True:
            prefix = _read_exact(f, 9)
            if prefix is None:
                if pos < size:
                    scan.problem = f"torn record header at offset {pos} (file ends at {size})"
                else:
                    scan.problem = "no summary or footer: the writer did not close the file"
                if last_chunk is not None:
                    last_chunk.indexes_complete = False
                break
            opcode, length = rec.RECORD_PREFIX.unpack(prefix)
            content_start = pos + 9
            end = content_start + length
            if opcode == 0:
                raise McapFileError(f"{path} is garbled at offset {pos} (opcode 0)")
            if end > size:
                scan.problem = (f"torn record (opcode 0x{opcode:02x}) at offset {pos}: it needs "
                                f"{length} bytes, the file ends at {size}; recorder killed?")
                if last_chunk is not None:
                    last_chunk.indexes_complete = False
                break
            if opcode == rec.OP_DATA_END:
                scan.data_end = end
                scan.complete = size >= end + rec.FOOTER_SIZE + len(rec.MAGIC) and \
                    _ends_with_magic(f, size)
                if not scan.complete:
                    scan.problem = "data-end record present but the footer is missing"
                return scan
            if opcode == rec.OP_FOOTER:
                scan.complete = True
                return scan
            if opcode == rec.OP_CHUNK:
                chunk = _chunk_ref(f, path, pos, length)
                scan.chunks.append(chunk)
                last_chunk = chunk
                f.seek(end)
            elif opcode == rec.OP_MESSAGE_INDEX and last_chunk is not None:
                content = f.read(length)
                cursor = rec.Cursor(content)
                channel_id = cursor.u16()
                last_chunk.index_offsets[channel_id] = pos
                last_chunk.index_length = end - (last_chunk.record_offset
                                                 + last_chunk.record_length)
                last_chunk.counts[channel_id] = cursor.u32() // 16
            else:
                if opcode != rec.OP_MESSAGE_INDEX:
                    last_chunk = None
                content = f.read(length)
                _top_level(scan, path, pos, opcode, content)
            pos = end
            scan.data_end = end
    return scan


def _ends_with_magic(f: BinaryIO, size: int) -> bool:
    f.seek(size - len(rec.MAGIC))
    return f.read(len(rec.MAGIC)) == rec.MAGIC


def _chunk_ref(f: BinaryIO, path: str, pos: int, length: int) -> ChunkRef:
    head = f.read(rec.CHUNK_HEAD.size + 4)
    try:
        start_ns, end_ns, usize, crc = rec.CHUNK_HEAD.unpack_from(head)
        comp_len = int.from_bytes(head[rec.CHUNK_HEAD.size:], "little")
        compression = f.read(comp_len).decode("utf-8")
        data_size = int.from_bytes(f.read(8), "little")
    except (ValueError, UnicodeDecodeError) as exc:
        raise McapFileError(f"{path}: chunk at offset {pos} is garbled ({exc})") from None
    data_offset = pos + 9 + rec.CHUNK_HEAD.size + 4 + comp_len + 8
    if data_offset + data_size > pos + 9 + length:
        raise McapFileError(f"{path}: chunk at offset {pos} is garbled (its data runs past the "
                            f"record)")
    return ChunkRef(pos, 9 + length, start_ns, end_ns, usize, crc, compression, data_offset,
                    data_size)


def _top_level(scan: McapScan, path: str, pos: int, opcode: int, content: bytes) -> None:
    try:
        if opcode == rec.OP_SCHEMA:
            schema = rec.parse_schema(content)
            scan.schemas[schema.id] = schema
        elif opcode == rec.OP_CHANNEL:
            channel = rec.parse_channel(content)
            scan.channels[channel.id] = channel
        elif opcode == rec.OP_METADATA:
            name, values = rec.parse_metadata(content)
            scan.metadata.setdefault(name, {}).update(values)
        elif opcode == rec.OP_MESSAGE:
            channel_id, _seq, log_ns, _pub = rec.MESSAGE_FIELDS.unpack_from(content)
            scan.loose.append(LooseMessage(channel_id, log_ns, content[rec.MESSAGE_FIELDS.size:]))
    except (rec.McapFormatError, UnicodeDecodeError, ValueError, struct.error) as exc:
        raise McapFileError(f"{path}: record 0x{opcode:02x} at offset {pos} is garbled "
                            f"({exc})") from None


def _decompress(data: bytes, compression: str, size: int) -> bytes:
    if compression == "":
        return data
    if compression == "zstd":
        try:
            from compression import zstd  # type: ignore[import-not-found]
        except ImportError:
            from backports import zstd  # type: ignore[no-redef]
        return zstd.decompress(data)
    if compression == "lz4":
        import lz4.frame  # installed with rosbags
        return lz4.frame.decompress(data)
    raise ValueError(f"unsupported chunk compression {compression!r}")


def read_chunk(f: BinaryIO, path: str, chunk: ChunkRef) -> bytes:
    """The chunk's uncompressed records, checked against its size and CRC."""
    f.seek(chunk.data_offset)
    data = f.read(chunk.data_size)
    try:
        raw = _decompress(data, chunk.compression, chunk.uncompressed_size)
    except Exception as exc:  # noqa: BLE001 - any decompressor error means a damaged chunk
        raise McapFileError(f"{path}: chunk at offset {chunk.record_offset} does not decompress "
                            f"({exc})") from None
    if len(raw) != chunk.uncompressed_size or (chunk.crc and zlib.crc32(raw) != chunk.crc):
        raise McapFileError(f"{path}: chunk at offset {chunk.record_offset} is corrupt (size or "
                            f"CRC mismatch)")
    return raw


def chunk_messages(raw: bytes, scan: McapScan, path: str,
                   offset: int) -> List[Tuple[int, int, bytes]]:
    """(channel id, log time ns, data) of every message in a chunk, in record order.

    Schema and channel records inside the chunk (rosbag2's C++ writer puts them there) are
    added to `scan` on the way.
    """
    out: List[Tuple[int, int, bytes]] = []
    try:
        for opcode, start, end in rec.iter_records(raw):
            if opcode == rec.OP_MESSAGE:
                channel_id, _seq, log_ns, _pub = rec.MESSAGE_FIELDS.unpack_from(raw, start)
                out.append((channel_id, log_ns, raw[start + rec.MESSAGE_FIELDS.size:end]))
            elif opcode in (rec.OP_SCHEMA, rec.OP_CHANNEL):
                _top_level(scan, path, offset, opcode, raw[start:end])
    except rec.McapFormatError as exc:
        raise McapFileError(f"{path}: chunk at offset {offset} is garbled ({exc})") from None
    return out
