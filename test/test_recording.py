"""ROS-free bag writer and reader: real CDR bytes in, the same bytes and fields out.

Messages are serialized with rclpy (the bytes a raw subscription delivers); the bags are read
back by our reader, by rosbags' Reader and by the independent `mcap` library.
"""
from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import uuid

import pytest
from rclpy.serialization import serialize_message
from sensor_msgs.msg import Imu, JointState
from std_msgs.msg import Float64MultiArray, MultiArrayDimension

from policy_distill_ros.recording.bag_reader import BagError, bag_info, read_bag, read_bag_raw
from policy_distill_ros.recording.bag_writer import BagWriteError, BagWriter, BagWriterConfig
from policy_distill_ros.recording.join import join_by_stamp
from policy_distill_ros.recording.mcap_scan import scan_mcap
from policy_distill_ros.recording.recover import recover

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def joint_state(i: int) -> JointState:
    m = JointState()
    m.header.stamp.sec, m.header.stamp.nanosec = 100 + i // 50, (i % 50) * 20_000_000
    m.header.frame_id = "base"
    m.name = ["hip_1", "ankle_1"]
    m.position = [0.01 * i, -0.02 * i]
    m.velocity = [float(i), 2.0]
    return m


def imu(i: int) -> Imu:
    m = Imu()
    m.header.stamp.sec = 100 + i
    m.orientation.w = 1.0
    m.angular_velocity.x, m.angular_velocity.z = 0.5 * i, -1.0
    m.linear_acceleration.z = 9.81
    return m


def episode(i: int) -> Float64MultiArray:
    m = Float64MultiArray()
    m.layout.dim = [MultiArrayDimension(label="episode_id,step,stamp_s,reward", size=4, stride=4)]
    m.data = [0.0, float(i), 100.0 + i * 0.02, 0.25 * i]
    return m


def make_stream(n: int):
    """[(topic, msgtype, log_time_ns, rclpy message)] over three types, log times increasing."""
    out = []
    for i in range(n):
        t = 1_700_000_000_000_000_000 + i * 1_000_000
        out.append(("/joint_states", "sensor_msgs/msg/JointState", t, joint_state(i)))
        if i % 2 == 0:
            out.append(("/imu", "sensor_msgs/msg/Imu", t + 10, imu(i)))
        if i % 5 == 0:
            out.append(("/episode", "std_msgs/msg/Float64MultiArray", t + 20, episode(i)))
    return out


def write_bag(path, stream, **config):
    """Write `stream`; returns [(topic, log time, bytes)] exactly as written.

    The bytes must be kept, not re-serialized later: CDR padding bytes from rclpy are not
    initialized, so two serializations of one message can differ in their padding.
    """
    writer = BagWriter(BagWriterConfig(path=str(path), **config)).open()
    channels, written = {}, []
    for topic, msgtype, t, msg in stream:
        if topic not in channels:
            channels[topic] = writer.add_topic(topic, msgtype)
        data = serialize_message(msg)
        assert writer.write(channels[topic], t, data)
        written.append((topic, t, data))
    writer.close()
    assert writer.error is None and writer.dropped == 0
    return written


def test_round_trip_three_readers_agree(tmp_path):
    stream = make_stream(600)
    bag = tmp_path / "demo"
    want = write_bag(bag, stream, flush_period_s=0.2,
                     custom_data={"teacher_sha256": "ab" * 32})

    ours = [(m.topic, m.log_time_ns, m.message) for m in read_bag_raw(str(bag))]
    assert ours == want

    from rosbags.rosbag2 import Reader
    with Reader(bag) as reader:
        assert reader.storage.metadata.custom == {"teacher_sha256": "ab" * 32}
        assert reader.message_count == len(want)
        theirs = [(c.topic, t, bytes(d)) for c, t, d in reader.messages()]
    assert theirs == want

    from mcap import reader as mcap_reader  # the independent MCAP reader (requirements/dev.txt)
    files = sorted(p for p in os.listdir(bag) if p.endswith(".mcap"))
    with open(bag / files[0], "rb") as f:
        reader = mcap_reader.make_reader(f, validate_crcs=True)
        indexed = [(ch.topic, m.log_time, m.data)
                   for _s, ch, m in reader.iter_messages(log_time_order=True)]
        summary = reader.get_summary()
        records = {m.name: m.metadata for m in reader.iter_metadata()}
    assert indexed == want
    assert summary.statistics.message_count == len(want)
    assert {s.name for s in summary.schemas.values()} == {
        "sensor_msgs/msg/JointState", "sensor_msgs/msg/Imu", "std_msgs/msg/Float64MultiArray"}
    assert all(s.encoding == "ros2msg" for s in summary.schemas.values())
    assert records["policy_distill_ros"] == {"teacher_sha256": "ab" * 32}


def test_deserialized_fields_equal_rclpy_fields(tmp_path):
    stream = make_stream(100)
    write_bag(tmp_path / "b", stream)
    got = list(read_bag(str(tmp_path / "b")))
    assert len(got) == len(stream)
    for (topic, msgtype, t, sent), item in zip(stream, got, strict=True):
        assert (item.topic, item.msgtype, item.log_time_ns) == (topic, msgtype, t)
        if msgtype.endswith("JointState"):
            assert list(item.message.name) == list(sent.name)
            assert list(item.message.position) == list(sent.position)
            assert item.message.header.stamp.nanosec == sent.header.stamp.nanosec
        elif msgtype.endswith("Imu"):
            assert item.message.angular_velocity.x == sent.angular_velocity.x
        else:
            assert item.message.layout.dim[0].label == sent.layout.dim[0].label
            assert list(item.message.data) == list(sent.data)


def test_topic_filter_and_info(tmp_path):
    stream = make_stream(200)
    write_bag(tmp_path / "b", stream, custom_data={"student_spec": "observation: {}"})
    imu_only = list(read_bag(str(tmp_path / "b"), topics=["imu"]))   # relative name matches
    assert len(imu_only) == 100 and {m.topic for m in imu_only} == {"/imu"}
    with pytest.raises(BagError, match="imu_typo"):
        list(read_bag(str(tmp_path / "b"), topics=["imu_typo"]))
    info = bag_info(str(tmp_path / "b"))
    assert {k: v.message_count for k, v in info.topics.items()} == {
        "/joint_states": 200, "/imu": 100, "/episode": 40}
    assert info.message_count == 340 and info.complete and not info.problems
    assert info.custom_data == {"student_spec": "observation: {}"}
    assert info.duration_s == pytest.approx(199e-3 + 10e-9)


def test_split_files_and_zstd_read_in_log_time_order(tmp_path):
    # Out-of-order log times across chunks too: the reader must merge, not concatenate.
    stream = make_stream(3000)
    bag = tmp_path / "split"
    writer = BagWriter(BagWriterConfig(path=str(bag), flush_period_s=0.05, max_file_size_mb=0.01,
                                       compression="zstd")).open()
    channels = {}
    for k, (topic, msgtype, t, msg) in enumerate(stream):
        channels.setdefault(topic, writer.add_topic(topic, msgtype))
        writer.write(channels[topic], t, serialize_message(msg))
        if k % 700 == 0:
            writer.flush()
    late = 1_600_000_000_000_000_000   # older than everything: must come out first
    writer.write(channels["/imu"], late, serialize_message(imu(7)))
    writer.close()
    files = sorted(p for p in os.listdir(bag) if p.endswith(".mcap"))
    assert len(files) >= 3, files
    times = [m.log_time_ns for m in read_bag_raw(str(bag))]
    assert times[0] == late and times == sorted(times) and len(times) == len(stream) + 1
    from rosbags.rosbag2 import Reader
    with Reader(bag) as reader:
        assert reader.message_count == len(stream) + 1
        assert len(list(reader.messages())) == len(stream) + 1


def test_missing_and_garbled_bags_name_the_file(tmp_path):
    with pytest.raises(BagError, match="does not exist"):
        list(read_bag(str(tmp_path / "nope")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(BagError, match="no .mcap files"):
        bag_info(str(tmp_path / "empty"))
    junk = tmp_path / "junk.mcap"
    junk.write_bytes(b"this is not an mcap file at all")
    with pytest.raises(BagError, match="junk.mcap.*not an MCAP file"):
        list(read_bag(str(junk)))
    write_bag(tmp_path / "flip", make_stream(100))
    data_file = tmp_path / "flip" / "flip_0.mcap"
    raw = bytearray(data_file.read_bytes())
    raw[len(raw) // 3] ^= 0xFF            # inside the chunk data
    data_file.write_bytes(bytes(raw))
    with pytest.raises(BagError, match="flip_0.mcap.*(corrupt|garbled)"):
        list(read_bag(str(tmp_path / "flip")))
    os.unlink(data_file)
    with pytest.raises(BagError, match="flip_0.mcap.*missing"):
        bag_info(str(tmp_path / "flip"))


def test_config_is_validated():
    with pytest.raises(ValueError, match="flush_period_s"):
        BagWriterConfig(path="/tmp/x", flush_period_s=2.0)
    with pytest.raises(ValueError, match="compression"):
        BagWriterConfig(path="/tmp/x", compression="gzip")
    with pytest.raises(ValueError, match="max_file_size_mb"):
        BagWriterConfig(path="/tmp/x", max_file_size_mb=-1)


def test_existing_bag_is_never_overwritten(tmp_path):
    write_bag(tmp_path / "b", make_stream(5))
    with pytest.raises(FileExistsError, match="never overwrites"):
        BagWriter(BagWriterConfig(path=str(tmp_path / "b"))).open()


KILLED_WRITER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {repo!r}); sys.path.insert(0, {test_dir!r})
    from rclpy.serialization import serialize_message
    from policy_distill_ros.recording.bag_writer import BagWriter, BagWriterConfig
    from test_recording import make_stream
    stream = make_stream(100000)
    w = BagWriter(BagWriterConfig(path={bag!r}, flush_period_s=0.1, max_file_size_mb=0.2)).open()
    ch = {{}}
    for k, (topic, msgtype, t, msg) in enumerate(stream):
        ch.setdefault(topic, w.add_topic(topic, msgtype))
        w.write(ch[topic], t, serialize_message(msg))
        if k % 500 == 499:
            w.flush()
            print("flushed", k + 1, flush=True)
    """)


def test_killed_writer_leaves_a_readable_bag_and_recover_indexes_it(tmp_path):
    bag = tmp_path / "killed"
    script = KILLED_WRITER.format(repo=REPO, test_dir=os.path.join(REPO, "test"), bag=str(bag))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    flushed = 0
    try:
        for line in proc.stdout:
            flushed = int(line.split()[1])
            if flushed >= 4000:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert flushed >= 4000, "writer did not get going"
    want = [(topic, t, _key(msg)) for topic, _type, t, msg in make_stream(100000)]

    info = bag_info(str(bag))
    assert not info.complete and info.problems
    got = [(m.topic, m.log_time_ns, _key(m.message)) for m in read_bag(str(bag))]
    assert len(got) >= flushed
    assert got == want[:len(got)]
    # Torn last writes, both shapes: (1) cut inside the message indexes after the last chunk
    # (the chunk is whole, its index set is not), (2) cut inside the chunk itself.
    files = sorted((p for p in os.listdir(bag) if p.endswith(".mcap")), key=lambda p: int(
        p.rsplit("_", 1)[1].split(".")[0]))
    with_chunks = [str(bag / f) for f in files if scan_mcap(str(bag / f)).chunks]
    last_file = with_chunks[-1]
    chunk = scan_mcap(last_file).chunks[-1]
    chunk_end = chunk.record_offset + chunk.record_length
    os.truncate(last_file, chunk_end + 20)                 # inside the first index record
    in_indexes = [(m.topic, m.log_time_ns, _key(m.message)) for m in read_bag(str(bag))]
    assert in_indexes == want[:len(in_indexes)] and len(in_indexes) >= flushed - 1000
    assert bag_info(str(bag)).message_count == len(in_indexes)
    os.truncate(last_file, chunk.record_offset + 50)        # inside the chunk record
    torn_raw = [(m.topic, m.log_time_ns, m.message) for m in read_bag_raw(str(bag))]
    torn = [(m.topic, m.log_time_ns, _key(m.message)) for m in read_bag(str(bag))]
    assert torn == want[:len(torn)] and 0 < len(torn) < len(in_indexes)
    assert bag_info(str(bag)).message_count == len(torn)

    report = recover(str(bag))
    assert report.message_count == len(torn)
    from rosbags.rosbag2 import Reader
    with Reader(bag) as reader:
        theirs = [(c.topic, t, bytes(d)) for c, t, d in reader.messages()]
    assert theirs == torn_raw
    assert bag_info(str(bag)).complete
    from mcap import reader as mcap_reader
    indexed = []
    for name in files:
        with open(bag / name, "rb") as f:
            indexed += [(ch.topic, m.log_time, m.data) for _s, ch, m in
                        mcap_reader.make_reader(f, validate_crcs=True).iter_messages()]
    assert sorted(indexed, key=lambda m: m[1]) == torn_raw


def _key(msg):
    """Comparable content of the test messages, for rclpy and deserialized ones alike."""
    if hasattr(msg, "name"):
        return ("js", msg.header.stamp.sec, msg.header.stamp.nanosec, tuple(msg.position))
    if hasattr(msg, "angular_velocity"):
        return ("imu", msg.header.stamp.sec, msg.angular_velocity.x)
    return ("arr", tuple(msg.data))


class _FullDisk:
    """A file that accepts `capacity` bytes, then fails like a full disk (after a partial write)."""

    def __init__(self, path: str, capacity: int) -> None:
        self._f = open(path, "xb", buffering=0)
        self._left = capacity

    def write(self, data) -> int:
        if self._left <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = min(len(data), self._left)
        self._left -= n
        return self._f.write(bytes(data[:n]))

    def __getattr__(self, name):
        return getattr(self._f, name)


def _fill_until_error(bag, opener=None):
    kwargs = {"file_opener": opener} if opener else {}
    writer = BagWriter(BagWriterConfig(path=str(bag), flush_period_s=0.05), **kwargs).open()
    channel = writer.add_topic("/joint_states", "sensor_msgs/msg/JointState")
    sent = []
    for i in range(100000):
        m = joint_state(i)
        m.name = [f"j{k}" for k in range(200)]       # ~2 KB per message: fills fast
        data = serialize_message(m)
        if not writer.write(channel, 1000 + i, data):
            break
        sent.append(data)
        if i % 50 == 49:
            try:
                writer.flush()
            except BagWriteError:
                break
    assert writer.error is not None, "the disk never filled up"
    writer.close()
    return writer, sent


def _check_disk_full_outcome(bag, writer, sent):
    message = str(writer.error)
    assert str(bag) in message and "disk full" in message and "Kept" in message
    got = [m.message for m in read_bag_raw(str(bag))]
    assert len(got) == writer.written > 0
    assert got == sent[:len(got)]


def test_disk_full_injected_enospc_keeps_what_was_written(tmp_path):
    """ENOSPC from the file layer after a partial write (works everywhere, no root needed)."""
    bag = tmp_path / "full"
    writer, sent = _fill_until_error(bag, lambda p: _FullDisk(p, 300_000))
    _check_disk_full_outcome(bag, writer, sent)


def test_disk_full_on_a_real_tiny_filesystem(tmp_path):
    """A real 2 MiB tmpfs, when this process may mount one (root with CAP_SYS_ADMIN)."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root and the mount command to create a 2 MiB tmpfs")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", f"tmpfs-{uuid.uuid4().hex[:6]}",
                           str(mount_point)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"mount -t tmpfs refused: {done.stderr.strip()}")
    try:
        bag = mount_point / "bag"
        writer, sent = _fill_until_error(bag)
        assert writer.error.__cause__.errno == errno.ENOSPC
        _check_disk_full_outcome(bag, writer, sent)
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)


def test_join_by_exact_stamp(tmp_path):
    stream = []
    for i in range(300):
        t = 1_000_000 + i * 1000
        state = joint_state(i)
        action = JointState()
        action.header.stamp = state.header.stamp
        action.name = ["hip_1"]
        action.position = [-0.5 * i]
        stream.append(("/joint_states", "sensor_msgs/msg/JointState", t, state))
        if i % 10 != 3:                       # some states produced no action
            stream.append(("/policy_action", "sensor_msgs/msg/JointState", t + 500, action))
    write_bag(tmp_path / "j", stream)
    joined = join_by_stamp(read_bag(str(tmp_path / "j")), "joint_states", "policy_action")
    assert len(joined.pairs) == 270 and joined.unmatched_actions == 0
    assert joined.unmatched_states == 30
    for _stamp, state, action in joined.pairs:
        assert action.position[0] == pytest.approx(-50.0 * state.position[0])


def test_a_backlog_is_written_in_bounded_chunks_in_order():
    """A flush of many queued messages becomes several chunks of at most CHUNK_BYTES (one
    oversized message alone), so a full disk loses the last chunk, not the whole backlog."""
    from policy_distill_ros.recording.bag_writer import _chunks
    sizes = [100_000] * 7 + [600_000] + [10] * 3
    batch = [(1, i, i, i, bytes(n)) for i, n in enumerate(sizes)]
    parts = list(_chunks(batch, 250_000))
    assert [e for part in parts for e in part] == batch
    assert all(part for part in parts)
    assert all(sum(len(e[4]) for e in part) <= 250_000 or len(part) == 1 for part in parts)
    assert [len(p) for p in parts] == [2, 2, 2, 1, 1, 3]
    assert list(_chunks([], 250_000)) == [[]]


def test_recorder_topics_pin_types_with_equals_and_still_read_the_old_colon_form():
    from policy_distill_ros.recording.recorder_config import RecorderConfig, TopicRequest
    cfg = RecorderConfig(topics=["imu", "front/imu=sensor_msgs/Imu",
                                 "vec:std_msgs/msg/Float64MultiArray"])
    assert cfg.requests == [TopicRequest("imu"), TopicRequest("front/imu", "sensor_msgs/msg/Imu"),
                            TopicRequest("vec", "std_msgs/msg/Float64MultiArray")]
    assert cfg.deprecations == ["recorder topics: entry 'vec:std_msgs/msg/Float64MultiArray' "
                                "uses the deprecated 'topic:Type' form; write "
                                "'vec=std_msgs/msg/Float64MultiArray'"]
    for bad, match in ((["imu=Imu"], "entry 'imu=Imu'.*not 'package/msg/Type'"),
                       (["imu="], "entry 'imu='.*expected 'topic' or 'topic=pkg/msg/Type'"),
                       (["  "], "an entry is empty"),
                       (["imu", "imu=sensor_msgs/Imu"], "duplicate")):
        with pytest.raises(ValueError, match=match):
            RecorderConfig(topics=bad)
