"""MCAP record encoding and decoding (https://mcap.dev/spec), the subset a ROS 2 bag uses.

Written from the specification so the recorder controls exactly when a chunk reaches the disk
(a flush on a timer, not "when 1 MiB is full") and so the reader can read a file whose writer
was killed (no summary, torn last record). All integers are little-endian.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Dict, Iterator, List, Mapping, Tuple

MAGIC = b"\x89MCAP0\r\n"

OP_HEADER = 0x01
OP_FOOTER = 0x02
OP_SCHEMA = 0x03
OP_CHANNEL = 0x04
OP_MESSAGE = 0x05
OP_CHUNK = 0x06
OP_MESSAGE_INDEX = 0x07
OP_CHUNK_INDEX = 0x08
OP_STATISTICS = 0x0B
OP_METADATA = 0x0C
OP_METADATA_INDEX = 0x0D
OP_SUMMARY_OFFSET = 0x0E
OP_DATA_END = 0x0F

RECORD_PREFIX = struct.Struct("<BQ")           # opcode, content length
MESSAGE_HEAD = struct.Struct("<BQHIQQ")         # prefix + channel_id, sequence, log, publish time
MESSAGE_FIELDS = struct.Struct("<HIQQ")
CHUNK_HEAD = struct.Struct("<QQQI")             # start, end, uncompressed size, crc
FOOTER_SIZE = 1 + 8 + 8 + 8 + 4                 # opcode, length, summary start, offset start, crc

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class McapFormatError(ValueError):
    """A record that does not follow the MCAP specification."""


# ---------------------------------------------------------------- encoding

def string(value: str) -> bytes:
    raw = value.encode("utf-8")
    return _U32.pack(len(raw)) + raw


def byte_array(value: bytes) -> bytes:
    return _U32.pack(len(value)) + value


def string_map(values: Mapping[str, str]) -> bytes:
    body = b"".join(string(k) + string(v) for k, v in sorted(values.items()))
    return _U32.pack(len(body)) + body


def record(opcode: int, content: bytes) -> bytes:
    return RECORD_PREFIX.pack(opcode, len(content)) + content


def header_record(profile: str, library: str) -> bytes:
    return record(OP_HEADER, string(profile) + string(library))


def schema_record(schema_id: int, name: str, encoding: str, data: bytes) -> bytes:
    return record(OP_SCHEMA, _U16.pack(schema_id) + string(name) + string(encoding)
                  + byte_array(data))


def channel_record(channel_id: int, schema_id: int, topic: str, message_encoding: str,
                   metadata: Mapping[str, str]) -> bytes:
    return record(OP_CHANNEL, _U16.pack(channel_id) + _U16.pack(schema_id) + string(topic)
                  + string(message_encoding) + string_map(metadata))


def metadata_record(name: str, values: Mapping[str, str]) -> bytes:
    return record(OP_METADATA, string(name) + string_map(values))


def chunk_record(start_ns: int, end_ns: int, uncompressed_size: int, crc: int,
                 compression: str, payload: bytes) -> bytes:
    return record(OP_CHUNK, CHUNK_HEAD.pack(start_ns, end_ns, uncompressed_size, crc)
                  + string(compression) + _U64.pack(len(payload)) + payload)


def message_index_record(channel_id: int, entries: List[Tuple[int, int]]) -> bytes:
    body = b"".join(_U64.pack(t) + _U64.pack(o) for t, o in entries)
    return record(OP_MESSAGE_INDEX, _U16.pack(channel_id) + _U32.pack(len(body)) + body)


def chunk_index_record(start_ns: int, end_ns: int, chunk_offset: int, chunk_length: int,
                       index_offsets: Mapping[int, int], index_length: int, compression: str,
                       compressed_size: int, uncompressed_size: int) -> bytes:
    offsets = b"".join(_U16.pack(c) + _U64.pack(o) for c, o in sorted(index_offsets.items()))
    return record(OP_CHUNK_INDEX, struct.pack("<QQQQ", start_ns, end_ns, chunk_offset,
                                              chunk_length)
                  + _U32.pack(len(offsets)) + offsets + _U64.pack(index_length)
                  + string(compression) + _U64.pack(compressed_size)
                  + _U64.pack(uncompressed_size))


def statistics_record(message_count: int, schema_count: int, channel_count: int,
                      metadata_count: int, chunk_count: int, start_ns: int, end_ns: int,
                      channel_counts: Mapping[int, int]) -> bytes:
    counts = b"".join(_U16.pack(c) + _U64.pack(n) for c, n in sorted(channel_counts.items()))
    return record(OP_STATISTICS, struct.pack("<QHIIIIQQ", message_count, schema_count,
                                             channel_count, 0, metadata_count, chunk_count,
                                             start_ns, end_ns)
                  + _U32.pack(len(counts)) + counts)


def metadata_index_record(offset: int, length: int, name: str) -> bytes:
    return record(OP_METADATA_INDEX, _U64.pack(offset) + _U64.pack(length) + string(name))


def summary_offset_record(group_opcode: int, start: int, length: int) -> bytes:
    return record(OP_SUMMARY_OFFSET, struct.pack("<BQQ", group_opcode, start, length))


def data_end_record() -> bytes:
    return record(OP_DATA_END, _U32.pack(0))


def footer_prefix(summary_start: int, summary_offset_start: int) -> bytes:
    """Footer up to (not including) its CRC field, which covers the summary and this prefix."""
    return RECORD_PREFIX.pack(OP_FOOTER, 20) + _U64.pack(summary_start) \
        + _U64.pack(summary_offset_start)


# ---------------------------------------------------------------- decoding

@dataclass(frozen=True)
class SchemaRec:
    id: int
    name: str
    encoding: str
    data: bytes


@dataclass(frozen=True)
class ChannelRec:
    id: int
    schema_id: int
    topic: str
    message_encoding: str
    metadata: Dict[str, str]


class Cursor:
    """Reads MCAP primitive fields from one record's content."""

    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes, pos: int = 0) -> None:
        self.buf = buf
        self.pos = pos

    def _take(self, n: int) -> memoryview:
        end = self.pos + n
        if end > len(self.buf):
            raise McapFormatError(f"field runs past the end of its record ({end} > "
                                  f"{len(self.buf)})")
        view = memoryview(self.buf)[self.pos:end]
        self.pos = end
        return view

    def u16(self) -> int:
        return _U16.unpack(self._take(2))[0]

    def u32(self) -> int:
        return _U32.unpack(self._take(4))[0]

    def u64(self) -> int:
        return _U64.unpack(self._take(8))[0]

    def raw(self, n: int) -> bytes:
        return bytes(self._take(n))

    def string(self) -> str:
        return str(self._take(self.u32()), "utf-8")

    def byte_array(self) -> bytes:
        return bytes(self._take(self.u32()))

    def string_map(self) -> Dict[str, str]:
        sub = Cursor(bytes(self._take(self.u32())))
        out: Dict[str, str] = {}
        while sub.pos < len(sub.buf):
            key = sub.string()
            out[key] = sub.string()
        return out


def parse_schema(content: bytes) -> SchemaRec:
    c = Cursor(content)
    return SchemaRec(c.u16(), c.string(), c.string(), c.byte_array())


def parse_channel(content: bytes) -> ChannelRec:
    c = Cursor(content)
    return ChannelRec(c.u16(), c.u16(), c.string(), c.string(), c.string_map())


def parse_metadata(content: bytes) -> Tuple[str, Dict[str, str]]:
    c = Cursor(content)
    return c.string(), c.string_map()


def iter_records(buf: bytes) -> Iterator[Tuple[int, int, int]]:
    """(opcode, content start, content end) of each record in a chunk's uncompressed data."""
    pos, size = 0, len(buf)
    while pos < size:
        if pos + 9 > size:
            raise McapFormatError(f"torn record header at chunk offset {pos}")
        opcode, length = RECORD_PREFIX.unpack_from(buf, pos)
        start = pos + 9
        end = start + length
        if end > size:
            raise McapFormatError(f"record at chunk offset {pos} runs past the chunk end")
        yield opcode, start, end
        pos = end
