"""A seeded random schedule of faults against a running student + timing monitor, over DDS.

Sensor pauses, NaN bursts, SIGSTOP stalls of the student, kill -9 and restart, and quiet
stretches, in an order and with durations drawn from a seeded generator, for
`FAULT_SCHEDULE_S` seconds (60 by default; CI may set fewer). After every event the properties
of docs/enforcement.md are checked on what an outside observer saw in that event's window:

- every command on `policy_command` is finite;
- the state returns to `nominal` with the policy commanding;
- a stall or a kill is answered by the monitor's fallback within the deadline plus a watchdog
  period (plus slack for this shared machine), and the fallback holds: merging the student's
  echoes (P: its command published, S: its own fallback published, withheld: nothing) with the
  monitor's fallback echoes (M) by publish time, each fallback the monitor declared is one run
  of M with no policy command inside (S is the same pose as M: the robot sees one run);
- the monitor publishes no fallback without a declared fallback, and declares one only for a
  gap between the student's actions longer than the deadline, as the observer saw it.
"""
from __future__ import annotations

import math
import os
import re
import signal
import threading
import time
from contextlib import ExitStack

import numpy as np
import pytest
import rclpy
from sensor_msgs.msg import JointState
from std_msgs.msg import String

from policy_models import make_linear_policy
from ros_harness import LATCHED, RECORD, RobotPeer, wait_until
from test_faults import ANGULAR_VELOCITY, SHUFFLED, SPEC, namespaced_node, set_joints

pytestmark = [pytest.mark.dds, pytest.mark.slow, pytest.mark.timeout(900)]

SCHEDULE_S = float(os.environ.get("FAULT_SCHEDULE_S", "60"))
SEED = int(os.environ.get("FAULT_SCHEDULE_SEED", "20261202"))
NS = f"/schedule_{os.getpid()}"
MONITOR = "schedule_monitor"
RATE_HZ = 50.0
DEADLINE_S = 0.15          # generous: other jobs share this machine's 2 cores
WATCHDOG_S = DEADLINE_S / 2     # the monitor's watchdog period: half the deadline
FALLBACK_SLACK_S = 0.35    # DDS delivery and scheduling on a loaded machine
RECOVER_S = 30.0


class Observer:
    """Student echoes and monitor fallback echoes, with their DDS source timestamps."""

    def __init__(self, peer: RobotPeer) -> None:
        self.lock = threading.Lock()
        self.events: list = []   # (source_s, kind)
        self.received: list = []  # (received_s, source_s, kind): when this process got it
        self.states: list = []
        node = peer.node
        self._subs = [
            node.create_subscription(JointState, f"{NS}/policy_action", self._on_echo, RECORD),
            node.create_subscription(JointState, f"{NS}/{MONITOR}/fallback_action",
                                     self._on_monitor, RECORD),
            node.create_subscription(String, f"{NS}/policy_enforcement",
                                     lambda m: self.states.append(m.data), LATCHED)]
        self._node = node

    def _on_echo(self, msg, info) -> None:
        frame = msg.header.frame_id
        kind = "-" if frame.startswith("withheld") else ("S" if frame == "fallback" else "P")
        self._add(info, kind)

    def _on_monitor(self, msg, info) -> None:
        self._add(info, "M")

    def _add(self, info, kind: str) -> None:
        source_s = info["source_timestamp"] * 1e-9
        with self.lock:
            self.events.append((source_s, kind))
            self.received.append((info["received_timestamp"] * 1e-9, source_s, kind))

    def delivery(self, start_s: float, end_s: float) -> str:
        """The student's echoes sent in a window as this process received them: the longest
        gap between receptions and the longest delay, to tell a late delivery from a silence."""
        with self.lock:
            rows = sorted(r for r in self.received if start_s <= r[1] < end_s and r[2] != "M")
        if len(rows) < 2:
            return "fewer than two echoes received"
        received = np.array([r[0] for r in rows])
        delays = received - np.array([r[1] for r in rows])
        worst = int(np.argmax(np.diff(received)))
        return (f"{len(rows)} echoes; longest gap between receptions "
                f"{np.diff(received)[worst] * 1e3:.1f} ms (ending at {received[worst + 1]:.3f});"
                f" delivery delay max {delays.max() * 1e3:.1f} ms, median "
                f"{np.median(delays) * 1e3:.1f} ms")

    def window(self, start_s: float, end_s: float) -> list:
        with self.lock:
            return sorted(e for e in self.events if start_s <= e[0] < end_s)

    def close(self) -> None:
        for sub in self._subs:
            self._node.destroy_subscription(sub)


# A SIGSTOP can land inside one action's publish (after the student decided to command, between
# its command and its echo, or before the write): that action then goes out once as the student
# resumes, after the monitor's fallback began. It was decided before the stall, not a policy
# taking control back; only a mux in front of the controller (the monitor as the one publisher)
# would remove it (docs/enforcement.md, known limits). At most one such action is set aside.
FROZEN_PUBLISH_S = 0.05


def student_params(model: str) -> dict:
    return {"model_path": model, "rate_hz": RATE_HZ, "max_input_age_s": 0.3,
            "deadline_s": DEADLINE_S}


def declarations(log: str) -> int:
    return log.count("nominal -> fallback")


def late_deliveries(log: str) -> int:
    """Silence fallbacks the monitor found, once the echoes came in, to be echoes held up in
    delivery (sent in time, taken after the verdict): a watchdog cannot tell them from a
    silence when it must decide; the fallback then ends as soon as they arrive."""
    return log.count("late delivery:")


def check_window(events: list, declared: int, what: str, continues: bool = False,
                 before_s: float | None = None, resumed_s: float | None = None,
                 late: int = 0) -> None:
    """No alternation, and monitor commands only inside declared fallbacks. `continues`: the
    previous window ended inside a monitor run (its declaration was counted there);
    `before_s`: the student's last action before this window (a gap may span the boundary);
    `resumed_s`: when a SIGSTOPped student was continued (see FROZEN_PUBLISH_S); `late`: of
    the declarations, those the monitor reported as a late delivery (see `late_deliveries`)."""
    if resumed_s is not None:
        frozen = [e for e in events if e[1] == "P"
                  and resumed_s - FROZEN_PUBLISH_S <= e[0] <= resumed_s + FROZEN_PUBLISH_S]
        assert len(frozen) <= 1, f"{what}: {len(frozen)} policy actions as the student resumed"
        events = [e for e in events if e not in frozen]
    # S (the student's own fallback) commands the same pose as M: neutral for alternation
    sequence = "".join(kind for _, kind in events if kind not in "-S")
    runs = re.findall(r"M+", sequence)
    if continues and sequence.startswith("M"):
        runs = runs[1:]
    summary = " ".join(f"{m[0][0]}x{len(m[0])}" for m in re.finditer(r"(.)\1*", sequence))
    assert len(runs) <= declared, \
        f"{what}: {len(runs)} monitor runs, {declared} declared: {summary}"
    student = ([before_s] if before_s is not None else []) + \
        [t for t, kind in events if kind != "M"]
    gaps = np.diff(np.array(student)) if len(student) > 1 else np.array([])
    if declared > late:
        # a declared fallback answers a silence: a gap between the student's actions longer
        # than the deadline (or a student that was silent from the window's start)
        first_m = next((t for t, kind in events if kind == "M"), math.inf)
        assert np.any(gaps > DEADLINE_S) or not student or first_m < student[0], \
            f"{what}: a fallback without a gap > {DEADLINE_S} s: {summary}"


@pytest.fixture()
def model(tmp_path):
    path = str(tmp_path / "student.onnx")
    make_linear_policy(path, SPEC, seed=11)
    return path


def test_random_fault_schedule(model, tmp_path):
    rng = np.random.default_rng(SEED)
    rclpy.init()
    peer = RobotPeer(SHUFFLED, rate_hz=100.0, namespace=NS)
    set_joints(peer, SHUFFLED)
    peer.angular_velocity = ANGULAR_VELOCITY
    observer = Observer(peer)
    monitor_params = {"model_path": model, "deadline_s": DEADLINE_S, "recovery_periods": 10,
                      "window_size": 100, "latency_warn_ms": 60000.0,
                      "latency_error_ms": 60000.0}
    done: list = []
    try:
        with ExitStack() as stack:
            mon = stack.enter_context(namespaced_node("timing_monitor_node", MONITOR, NS,
                                                      monitor_params, tmp_path))
            student = [stack.enter_context(namespaced_node(
                "student_node", "student_node", NS, student_params(model), tmp_path))]

            def nominal_and_commanding() -> bool:
                if not observer.states or observer.states[-1] != "nominal":
                    return False
                recent = observer.window(time.time() - 0.3, math.inf)
                return any(kind == "P" for _, kind in recent)

            def recover(what: str) -> None:
                try:
                    wait_until(nominal_and_commanding, RECOVER_S, f"nominal after {what}")
                except AssertionError as exc:
                    raise AssertionError(f"{exc}; events done {done}\n--- monitor:\n"
                                         f"{mon.node.read_log()[-2500:]}\n--- student:\n"
                                         f"{student[0].node.read_log()[-2500:]}") from None

            recover("start")
            started = time.monotonic()
            mon_log = mon.node.read_log()
            mark_s, in_run = time.time(), False
            declared_mark, late_mark = declarations(mon_log), late_deliveries(mon_log)
            last_student_s = None
            while time.monotonic() - started < SCHEDULE_S:
                kind = str(rng.choice(["pause", "nan", "stall", "kill", "quiet"]))
                duration_s = float(rng.uniform(0.2, 1.0))
                if kind == "pause":      # every sensor stops: stale input, the student's fallback
                    peer.publish_joints = peer.publish_imu = False
                    time.sleep(duration_s)
                    peer.publish_joints = peer.publish_imu = True
                elif kind == "nan":      # NaN in a joint velocity: the student's own fallback
                    set_joints(peer, SHUFFLED, velocity={"hip": math.nan})
                    time.sleep(duration_s)
                    set_joints(peer, SHUFFLED)
                elif kind == "stall":    # the student is not scheduled at all
                    os.kill(student[0].pid, signal.SIGSTOP)
                    stopped_s = time.time()
                    time.sleep(duration_s + DEADLINE_S)
                    os.kill(student[0].pid, signal.SIGCONT)
                    resumed_s = time.time()
                elif kind == "kill":     # kill -9, then a new student process
                    student[0].node.kill()
                    stopped_s = time.time()
                    time.sleep(duration_s + DEADLINE_S)
                    student[0].node.stop()
                    student[0] = stack.enter_context(namespaced_node(
                        "student_node", "student_node", NS, student_params(model), tmp_path))
                else:
                    time.sleep(1.0 + duration_s)
                recover(kind)
                time.sleep(0.3)
                # windows tile the run: each event is judged on what happened since the last check
                now_s = time.time()
                events = observer.window(mark_s, now_s)
                mon_log = mon.node.read_log()
                declared_now, late_now = declarations(mon_log), late_deliveries(mon_log)
                declared, late = declared_now - declared_mark, late_now - late_mark
                what = f"event {len(done)} {kind} {duration_s:.2f} s"
                try:
                    check_window(events, declared, what, continues=in_run,
                                 before_s=last_student_s,
                                 resumed_s=resumed_s if kind == "stall" else None, late=late)
                except AssertionError as exc:
                    raise AssertionError(f"{exc}\n--- observer: {observer.delivery(mark_s, now_s)}"
                                         f"\n--- monitor:\n{mon.node.read_log()[-2000:]}"
                                         f"\n--- student:\n{student[0].node.read_log()[-2500:]}"
                                         ) from None
                if kind in ("stall", "kill"):
                    last_p = max((t for t, k in events if k != "M" and t <= stopped_s),
                                 default=None)
                    first_m = next((t for t, k in events if k == "M" and t >= stopped_s), None)
                    assert declared >= 1 and first_m is not None, what
                    if last_p is not None:
                        assert first_m - last_p <= DEADLINE_S + WATCHDOG_S + FALLBACK_SLACK_S, \
                            f"{what}: fallback {first_m - last_p:.3f} s after the last action"
                with peer.lock:
                    commands = [c for _, c in peer.commands]
                assert all(np.all(np.isfinite(c)) for c in commands), what
                done.append((kind, round(duration_s, 2), declared)
                            + ((f"{late} late delivery",) if late else ()))
                kinds_seen = [k for _, k in events if k not in "-S"]
                in_run = bool(kinds_seen) and kinds_seen[-1] == "M"
                last_student_s = max((t for t, k in events if k != "M"),
                                     default=last_student_s)
                mark_s, declared_mark, late_mark = now_s, declared_now, late_now
            mon_log = mon.node.read_log()
    finally:
        observer.close()
        peer.close()
        rclpy.try_shutdown()
    kinds = {event[0] for event in done}
    print(f"seed {SEED}: {len(done)} events in {SCHEDULE_S:g} s: {done}")
    assert len(done) >= 4 and {"stall", "kill"} & kinds, done
    assert "Traceback" not in mon_log
