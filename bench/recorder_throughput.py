"""Recorder throughput: publish N messages at >= 10k msg/s from another process, record, count.

    .venv/bin/python bench/recorder_throughput.py [--count 50000] [--rate-hz 12000]

The publisher is reliable KEEP_ALL (DDS itself drops nothing: a full history blocks the
publisher), so every missing message is the recorder's. Prints sent, received, drops, the
publish rate achieved, the rate the recorder sustained (from the bag's log times) and the
recorder's CPU time per message (both its threads, start-up excluded), and exits non-zero when
anything was dropped.
"""
from __future__ import annotations

import argparse
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
TOPIC = "bench_data"
MSGTYPE = "std_msgs/msg/Float64MultiArray"


def publisher(count: int, rate_hz: float, payload_doubles: int) -> int:
    """Child process: wait for the recorder, publish `count` pre-serialized messages, report."""
    import rclpy
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.serialization import serialize_message
    from std_msgs.msg import Float64MultiArray

    rclpy.init()
    node = rclpy.create_node("throughput_publisher")
    qos = QoSProfile(history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.VOLATILE)
    pub = node.create_publisher(Float64MultiArray, TOPIC, qos)
    deadline = time.monotonic() + 30
    while pub.get_subscription_count() < 1:
        if time.monotonic() > deadline:
            print("ERROR no subscriber after 30 s", flush=True)
            return 2
        time.sleep(0.05)
    time.sleep(0.5)   # let the subscription's matching settle on both sides
    msg = Float64MultiArray()
    msg.data = [0.0] * payload_doubles
    template = bytes(serialize_message(msg))
    offset = template.index(struct.pack("<d", 0.0) * payload_doubles)
    payloads = [template[:offset] + struct.pack("<d", float(i)) + template[offset + 8:]
                for i in range(count)]
    period = 1.0 / rate_hz
    start = time.perf_counter()
    for i, data in enumerate(payloads):
        target = start + i * period
        while time.perf_counter() < target:
            pass
        pub.publish(data)
    elapsed = time.perf_counter() - start
    print(f"SENT {count} {elapsed:.6f}", flush=True)
    time.sleep(1.0)   # keep the writer alive while reliable resends drain
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


def cpu_s(pid: int) -> float:
    import psutil
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def wait_started(pid: int, bag: str, timeout_s: float = 30.0) -> float:
    """The recorder's CPU seconds once it has opened the bag and gone idle (start-up done)."""
    deadline = time.monotonic() + timeout_s
    last = cpu_s(pid)
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = cpu_s(pid)
        if os.path.exists(bag) and now - last < 0.01:
            return now
        last = now
    return last


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=50000)
    parser.add_argument("--rate-hz", type=float, default=12000.0)
    parser.add_argument("--payload-doubles", type=int, default=16)
    parser.add_argument("--flush-period-s", type=float, default=0.5)
    parser.add_argument("--keep", action="store_true", help="keep the recorded bag")
    parser.add_argument("--publisher", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.publisher:
        return publisher(args.count, args.rate_hz, args.payload_doubles)

    os.environ.setdefault("ROS_DOMAIN_ID", str(101 + os.getpid() % 100))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    from policy_distill_ros.processes import NodeProcess
    from policy_distill_ros.recording.bag_reader import bag_info, read_bag_raw

    bag = os.path.join(tempfile.mkdtemp(prefix="recorder_bench_"), "bag")
    recorder = NodeProcess("recorder_node", "recorder_node",
                           {"topics": [f"{TOPIC}:{MSGTYPE}"], "bag_path": bag,
                            "flush_period_s": args.flush_period_s,
                            "qos_depth": max(1000, args.count)}).start()
    cpu_start = wait_started(recorder.proc.pid, bag)
    pub = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--publisher",
                            "--count", str(args.count), "--rate-hz", str(args.rate_hz),
                            "--payload-doubles", str(args.payload_doubles)],
                           stdout=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        out, _ = pub.communicate(timeout=120 + args.count / 1000)
        sent, publish_s = 0, float("nan")
        for line in out.splitlines():
            if line.startswith("SENT"):
                sent, publish_s = int(line.split()[1]), float(line.split()[2])
            elif line.startswith("ERROR"):
                print(line)
        # Wait until the bag stops growing (the writer flushes every flush_period_s).
        last, still = -1, 0
        while still < 4:
            time.sleep(max(0.5, args.flush_period_s))
            now = bag_info(bag).message_count
            still = still + 1 if now == last else 0
            last = now
        recorder_cpu_s = cpu_s(recorder.proc.pid) - cpu_start
    finally:
        if pub.poll() is None:
            pub.kill()
            pub.wait()
        recorder.stop(timeout_s=30)
    log = recorder.read_log()
    ids, times = [], []
    for item in read_bag_raw(bag):
        ids.append(int(struct.unpack_from("<d", item.message, len(item.message) - 8 *
                                          args.payload_doubles)[0]))
        times.append(item.log_time_ns)
    received = len(ids)
    unique = len(set(ids))
    span_s = (times[-1] - times[0]) * 1e-9 if len(times) > 1 else float("nan")
    print(f"messages sent:      {sent} ({args.payload_doubles} doubles each, "
          f"{len(item.message) if ids else 0} bytes CDR)")
    print(f"publish rate:       {sent / publish_s:,.0f} msg/s (target {args.rate_hz:,.0f})")
    print(f"received/sent:      {received}/{sent}  (unique {unique}, in order "
          f"{ids == sorted(ids)})")
    print(f"recorded rate:      {received / span_s:,.0f} msg/s over {span_s:.2f} s of log time")
    print(f"drops:              {sent - unique}")
    print(f"recorder CPU:       {1e6 * recorder_cpu_s / max(received, 1):.1f} us/msg "
          f"({recorder_cpu_s:.2f} s for {received} messages)")
    print(f"recorder exit code: {recorder.proc.returncode}; "
          + next((line.split("]: ", 1)[-1] for line in log.splitlines() if "closed bag" in line),
                 "no 'closed bag' line in the recorder log"))
    if args.keep:
        print(f"bag kept at {bag}")
    else:
        shutil.rmtree(os.path.dirname(bag), ignore_errors=True)
    return 0 if sent and unique == sent else 1


if __name__ == "__main__":
    sys.exit(main())
