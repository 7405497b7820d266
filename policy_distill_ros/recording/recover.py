"""Make a killed recording a complete bag for every tool (like `ros2 bag reindex`).

`read_bag`/`bag_info` read a killed bag as it is. rosbags' Reader, `ros2 bag` and some MCAP
readers want each file's summary and footer, and a metadata.yaml that counts every message.
`recover(bag)` cuts each unclosed file back to its last complete record, appends the summary
(rebuilt from the records that are there) and footer, and rewrites metadata.yaml from the files.

    python -m policy_distill_ros.recording.recover BAG_DIR
"""
from __future__ import annotations

import argparse
import os
import sys
import zlib
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from policy_distill_ros.recording import bag_metadata as meta
from policy_distill_ros.recording import mcap_records as rec
from policy_distill_ros.recording.bag_reader import BagError, bag_files, scan_bag
from policy_distill_ros.recording.bag_writer import SPECS_METADATA_NAME
from policy_distill_ros.recording.mcap_scan import (ChunkRef, McapScan, chunk_messages,
                                                    read_chunk)
from policy_distill_ros.recording.msg_types import MessageTypeError, message_definition


@dataclass
class RecoveryReport:
    bag: str
    repaired_files: List[str] = field(default_factory=list)
    bytes_cut: Dict[str, int] = field(default_factory=dict)   # torn tail removed per file
    message_count: int = 0


def recover(path: str) -> RecoveryReport:
    """Index every unclosed .mcap file of the bag at `path` and rewrite its metadata.yaml."""
    if not os.path.isdir(path):
        raise BagError(f"recover needs a bag directory; {path} is not one")
    bag_files(path)   # raises a clear error for a missing/empty/broken bag
    report = RecoveryReport(bag=path)
    for scan in scan_bag(path):
        if not scan.complete:
            report.bytes_cut[scan.path] = _close_file(scan)
            report.repaired_files.append(scan.path)
    scans = scan_bag(path)   # the files as they are now, all complete
    metadata = _metadata_from(path, scans)
    meta.write_metadata(path, metadata)
    report.message_count = sum(f.message_count for f in metadata.files)
    return report


def _close_file(scan: McapScan) -> int:
    """Truncate to the last complete record, add missing message indexes, summary, footer."""
    size = os.path.getsize(scan.path)
    last = scan.chunks[-1] if scan.chunks else None
    if last is not None and not last.indexes_complete:
        # Its message indexes may be cut short: drop them and rebuild from the chunk itself.
        scan.data_end = last.record_offset + last.record_length
    with open(scan.path, "r+b") as f:
        f.truncate(scan.data_end)
        f.seek(scan.data_end)
        tail = bytearray()
        if last is not None and not last.indexes_complete:
            tail += _rebuild_indexes(f, scan, last, scan.data_end)
        tail += rec.data_end_record()
        summary_start = scan.data_end + len(tail)
        summary = _summary(scan, summary_start)
        offsets_start = summary_start + len(summary)
        footer = rec.footer_prefix(summary_start, offsets_start)
        crc = zlib.crc32(footer, zlib.crc32(summary))
        f.write(bytes(tail + summary + footer) + crc.to_bytes(4, "little") + rec.MAGIC)
        f.flush()
        os.fsync(f.fileno())
    return size - scan.data_end


def _rebuild_indexes(f, scan: McapScan, chunk: ChunkRef, at: int) -> bytes:
    """Message index records for a chunk whose own indexes were torn off."""
    raw = read_chunk(f, scan.path, chunk)
    entries: Dict[int, List] = {}
    for opcode, start, end in rec.iter_records(raw):
        if opcode == rec.OP_MESSAGE:
            channel_id, _seq, log_ns, _pub = rec.MESSAGE_FIELDS.unpack_from(raw, start)
            entries.setdefault(channel_id, []).append((log_ns, start - 9))
    chunk.index_offsets.clear()
    chunk.counts.clear()
    out = bytearray()
    for channel_id in sorted(entries):
        chunk.index_offsets[channel_id] = at + len(out)
        chunk.counts[channel_id] = len(entries[channel_id])
        out += rec.message_index_record(channel_id, entries[channel_id])
    chunk.index_length = len(out)
    chunk.indexes_complete = True
    f.seek(at)
    return bytes(out)


def _summary(scan: McapScan, summary_start: int) -> bytes:
    if scan.chunks and not scan.channels:
        with open(scan.path, "rb") as f:
            for chunk in scan.chunks:
                chunk_messages(read_chunk(f, scan.path, chunk), scan, scan.path,
                               chunk.record_offset)
    out = bytearray()
    groups = []

    def group(opcode: int, records: Sequence[bytes]) -> None:
        if records:
            groups.append((opcode, summary_start + len(out), sum(map(len, records))))
            out.extend(b"".join(records))

    group(rec.OP_SCHEMA, [rec.schema_record(s.id, s.name, s.encoding, s.data)
                          for s in sorted(scan.schemas.values(), key=lambda s: s.id)])
    group(rec.OP_CHANNEL, [rec.channel_record(c.id, c.schema_id, c.topic, c.message_encoding,
                                              c.metadata)
                           for c in sorted(scan.channels.values(), key=lambda c: c.id)])
    counts: Dict[int, int] = {}
    for chunk in scan.chunks:
        for channel_id, n in chunk.counts.items():
            counts[channel_id] = counts.get(channel_id, 0) + n
    used = [c for c in scan.chunks if c.counts]
    group(rec.OP_STATISTICS, [rec.statistics_record(
        sum(counts.values()), len(scan.schemas), len(scan.channels), len(scan.metadata),
        len(scan.chunks), min((c.start_ns for c in used), default=0),
        max((c.end_ns for c in used), default=0), counts)])
    group(rec.OP_CHUNK_INDEX, [rec.chunk_index_record(
        c.start_ns, c.end_ns, c.record_offset, c.record_length, c.index_offsets, c.index_length,
        c.compression, c.data_size, c.uncompressed_size) for c in scan.chunks])
    for opcode, start, length in groups:
        out += rec.summary_offset_record(opcode, start, length)
    return bytes(out)


def _metadata_from(path: str, scans: List[McapScan]) -> meta.BagMetadata:
    old: Optional[dict] = None
    try:
        old = meta.read_metadata(path)
    except (OSError, ValueError):
        old = None
    hashes = {t["topic_metadata"]["name"]: t["topic_metadata"].get("type_description_hash", "")
              for t in (old or {}).get("topics_with_message_count") or []}
    custom = {str(k): str(v) for k, v in ((old or {}).get("custom_data") or {}).items()}
    topics: Dict[str, meta.TopicEntry] = {}
    files = []
    for scan in scans:
        custom = {**scan.metadata.get(SPECS_METADATA_NAME, {}), **custom}
        counts: Dict[int, int] = {}
        for chunk in scan.chunks:
            for channel_id, n in chunk.counts.items():
                counts[channel_id] = counts.get(channel_id, 0) + n
        for channel in scan.channels.values():
            msgtype = scan.schemas[channel.schema_id].name
            entry = topics.get(channel.topic)
            if entry is None:
                entry = topics[channel.topic] = meta.TopicEntry(
                    channel.topic, msgtype, hashes.get(channel.topic) or _hash(msgtype),
                    channel.metadata.get("offered_qos_profiles", ""))
            entry.message_count += counts.get(channel.id, 0)
        used = [c for c in scan.chunks if c.counts]
        files.append(meta.FileEntry(os.path.basename(scan.path), sum(counts.values()),
                                    min((c.start_ns for c in used), default=None),
                                    max((c.end_ns for c in used), default=None)))
    return meta.BagMetadata(topics=list(topics.values()), files=files, custom_data=custom)


def _hash(msgtype: str) -> str:
    try:
        return message_definition(msgtype)[1]
    except MessageTypeError:
        return ""


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bag", help="bag directory left by a killed recorder")
    args = parser.parse_args(argv)
    try:
        report = recover(args.bag)
    except BagError as exc:
        print(f"recover: {exc}", file=sys.stderr)
        return 1
    for file_path in report.repaired_files:
        print(f"indexed {file_path} (cut {report.bytes_cut[file_path]} torn bytes)")
    print(f"{args.bag}: {report.message_count} messages, metadata.yaml rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
