"""Make a killed recording a complete bag for every tool (like `ros2 bag reindex`).

`read_bag`/`bag_info` read a killed bag as it is. rosbags' Reader, `ros2 bag` and some MCAP
readers want each file's summary and footer, and a metadata.yaml that counts every message.
`recover(bag)` rewrites each unclosed file from its complete records with `mcap`'s Writer (which
adds the summary and footer), drops the torn tail, and rewrites metadata.yaml from the files. It
needs free space for one copy of the largest unclosed file (copy a bag off a full disk first).

    python -m policy_distill_ros.recording.recover BAG_DIR
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from mcap.records import Channel, Header, Message, Schema
from mcap.writer import CompressionType, Writer

from policy_distill_ros.recording import bag_metadata as meta
from policy_distill_ros.recording.bag_reader import BagError, bag_files, scan_bag
from policy_distill_ros.recording.bag_writer import SPECS_METADATA_NAME
from policy_distill_ros.recording.mcap_file import COMPRESSION, LIBRARY, PROFILE
from policy_distill_ros.recording.mcap_scan import McapScan, read_chunk
from policy_distill_ros.recording.msg_types import MessageTypeError, message_definition


@dataclass
class RecoveryReport:
    bag: str
    repaired_files: list[str] = field(default_factory=list)
    bytes_cut: dict[str, int] = field(default_factory=dict)   # torn tail removed per file
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
    """Rewrite the file's complete records with `mcap`'s Writer, chunk by chunk, which adds the
    summary and footer; the new file replaces the old one once it is complete and synced."""
    size = os.path.getsize(scan.path)
    temporary = scan.path + ".recovering"
    try:
        _rewrite(scan, temporary)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    os.replace(temporary, scan.path)
    return size - scan.data_end


def _rewrite(scan: McapScan, temporary: str) -> None:
    compression = scan.chunks[0].compression if scan.chunks else ""
    with open(scan.path, "rb") as source, open(temporary, "wb") as target:
        writer = Writer(target, chunk_size=1 << 62,
                        compression=COMPRESSION.get(compression, CompressionType.ZSTD))
        header = scan.header or Header(PROFILE, LIBRARY)
        writer.start(profile=header.profile, library=header.library)
        for name, values in scan.metadata.items():
            writer.add_metadata(name, values)
        schemas: dict[int, int] = {}     # id in the old file -> id in the new one
        channels: dict[int, int] = {}

        def declare(record) -> None:
            if isinstance(record, Schema) and record.id not in schemas:
                schemas[record.id] = writer.register_schema(record.name, record.encoding,
                                                            record.data)
            elif isinstance(record, Channel) and record.id not in channels:
                channels[record.id] = writer.register_channel(
                    record.topic, record.message_encoding, schemas.get(record.schema_id, 0),
                    record.metadata)

        for record in [*scan.schemas.values(), *scan.channels.values()]:
            declare(record)
        for chunk in scan.chunks:
            for record in read_chunk(source, scan.path, chunk):
                if isinstance(record, Message):
                    writer.add_message(channels[record.channel_id], record.log_time,
                                       record.data, record.publish_time, record.sequence)
                else:
                    declare(record)
            writer.flush()
        for loose in scan.loose:
            writer.add_message(channels[loose.channel_id], loose.log_time_ns, loose.data,
                               loose.log_time_ns)
        writer.finish()
        target.flush()
        os.fsync(target.fileno())


def _metadata_from(path: str, scans: list[McapScan]) -> meta.BagMetadata:
    old: dict | None = None
    try:
        old = meta.read_metadata(path)
    except (OSError, ValueError):
        old = None
    hashes = {t["topic_metadata"]["name"]: t["topic_metadata"].get("type_description_hash", "")
              for t in (old or {}).get("topics_with_message_count") or []}
    custom = {str(k): str(v) for k, v in ((old or {}).get("custom_data") or {}).items()}
    topics: dict[str, meta.TopicEntry] = {}
    files = []
    for scan in scans:
        custom = {**scan.metadata.get(SPECS_METADATA_NAME, {}), **custom}
        counts: dict[int, int] = {}
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


def main(argv: Sequence[str] | None = None) -> int:
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
