"""timing_monitor_node + student_node end to end over DDS: the enforcement semantic of
docs/enforcement.md.

A healthy student gets no monitor command, in timer and on_message mode (the deadline follows
the input period); when actions stop (kill -9, SIGSTOP) the fallback starts within the deadline
plus a watchdog period and holds (the command stream reads policy*, fallback*, policy*: never
alternating), control returns after `recovery_periods` on-time actions; `escalation: latch`
holds until `~/reset`; the state is on `policy_enforcement` and /diagnostics, logged once per
change; a stalled monitor does not blame the student.
"""
from __future__ import annotations

import os
import re
import signal
import time

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticStatus
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger

from node_process import node_process
from policy_models import make_linear_policy
from ros_harness import LATCHED, RECORD, RobotPeer, wait_for_log, wait_until
from test_student_node import LOWER, OFFSET, PUBLISHED_ORDER, SPEC, UPPER

pytestmark = [pytest.mark.dds, pytest.mark.timeout(180)]

MONITOR = "timing_monitor_node"
DEFAULT_POSE = np.clip(OFFSET, LOWER, UPPER)
RECOVERY_PERIODS = 10
# Generous (7.5 periods at 50 Hz): other jobs share this machine's 2 cores and a 40 ms deadline
# was really missed every few seconds; the stalls and kills below are far longer.
DEADLINE_S = 0.15


@pytest.fixture(scope="module")
def peer():
    rclpy.init()
    robot = RobotPeer(PUBLISHED_ORDER, rate_hz=100.0)
    robot.position = np.array([0.4, 9.0, -0.3, 0.25])
    robot.velocity = np.array([0.3, 9.0, -0.5, 0.1])
    robot.record_floats(f"/{MONITOR}/latency_ms")
    robot.record_floats(f"/{MONITOR}/latency_p99_ms")
    robot.monitor_fallbacks = []
    robot.node.create_subscription(JointState, f"/{MONITOR}/fallback_action",
                                   robot.monitor_fallbacks.append, RECORD)
    robot.states = []
    robot.node.create_subscription(String, "policy_enforcement",
                                   lambda m: robot.states.append(m.data), LATCHED)
    yield robot
    robot.close()
    rclpy.try_shutdown()


@pytest.fixture()
def model(tmp_path):
    path = str(tmp_path / "student.onnx")
    make_linear_policy(path, SPEC, seed=3)
    return path


def student(model_path: str, **extra):
    params = {"model_path": model_path, "rate_hz": 50.0, "max_input_age_s": 0.3,
              "deadline_s": DEADLINE_S}
    params.update(extra)
    return node_process("student_node", "student_node", params)


def monitor(model_path: str, **extra):
    # A 100-action (2 s) latency window: with the default 1,000 (20 s at 50 Hz), ten slow
    # actions while a loaded CI machine starts the student held p99 above the warning level for
    # as long as the tests wait for OK.
    params = {"model_path": model_path, "student_node": "student_node", "window_size": 100,
              "deadline_s": DEADLINE_S,
              "recovery_periods": RECOVERY_PERIODS, "latency_warn_ms": 100.0,
              "latency_error_ms": 200.0}
    params.update(extra)
    return node_process(MONITOR, MONITOR, params)


def latest_status(peer: RobotPeer, since: int = 0):
    with peer.lock:
        arrays = peer.diagnostics[since:]
    for array in reversed(arrays):
        for status in array.status:
            if status.name.startswith(MONITOR):
                return status
    return None


def values_of(status) -> dict:
    return {kv.key: kv.value for kv in status.values}


def latest_count(peer: RobotPeer, key: str) -> int:
    status = latest_status(peer)
    return -1 if status is None else int(values_of(status).get(key, -1))


def wait_for_level(peer: RobotPeer, level: bytes, timeout_s: float = 15.0):
    since = len(peer.diagnostics)
    try:
        wait_until(lambda: (s := latest_status(peer, since)) is not None and s.level == level,
                   timeout_s, f"diagnostics level {level!r}")
    except AssertionError as exc:  # say what the monitor reported instead
        with peer.lock:
            seen = [(s.level, s.message) for a in peer.diagnostics[since:] for s in a.status
                    if s.name.startswith(MONITOR)]
        raise AssertionError(f"{exc}; the monitor reported {seen[-8:]}") from None
    return latest_status(peer, since)


def wait_nominal_and_ok(peer: RobotPeer, procs=(), timeout_s: float = 30.0):
    try:
        wait_until(lambda: peer.states and peer.states[-1] == "nominal", timeout_s, "nominal")
        return wait_for_level(peer, DiagnosticStatus.OK, timeout_s)
    except AssertionError as exc:
        logs = "".join(f"\n--- {p.node.node_name} log:\n{p.node.read_log()[-2000:]}"
                       for p in procs)
        raise AssertionError(f"{exc}{logs}") from None


def command_pattern(peer: RobotPeer, since: int) -> str:
    """The commands received since index `since`: F (the fallback pose) or P (the policy)."""
    with peer.lock:
        commands = [c for _, c in peer.commands[since:]]
    return "".join("F" if np.allclose(c, DEFAULT_POSE) else "P" for c in commands)


def assert_no_alternation(pattern: str, monitor_log: str, student=None) -> None:
    """Each fallback the monitor declared is one unbroken run of fallback commands: no policy
    command inside it (a loaded machine may cause several real fallbacks, each logged).
    `student`: its process, whose log a failure shows (its own fallbacks say why there)."""
    runs = " ".join(f"{m[0][0]}x{len(m[0])}" for m in re.finditer(r"P+|F+", pattern))
    declared = monitor_log.count("nominal -> fallback")
    if declared >= 1 and len(re.findall(r"F+", pattern)) <= declared:
        return
    student_log = "" if student is None else f"\n--- student log:\n{student.node.read_log()}"
    raise AssertionError(f"policy and fallback alternate ({declared} fallbacks declared): "
                         f"{runs}\n--- monitor log:\n{monitor_log}{student_log}")


def assert_quiet_while_nominal(peer: RobotPeer, mon) -> None:
    """Back in nominal, the monitor publishes nothing unless it declared a new fallback (a
    real miss on this loaded machine, logged)."""
    time.sleep(0.3)
    count, declared = len(peer.monitor_fallbacks), mon.node.read_log().count("-> fallback")
    time.sleep(0.5)
    if len(peer.monitor_fallbacks) != count:
        assert mon.node.read_log().count("-> fallback") > declared, "fallback still published"


def test_latency_reported_on_diagnostics_and_topics(peer, model):
    with monitor(model), student(model):
        status = wait_for_level(peer, DiagnosticStatus.OK, 20)
        values = values_of(status)
        assert values["state"] == "nominal"
        assert int(values["actions"]) > 0
        p50 = float(values["latency_p50_ms_window"])
        assert 0.0 < p50 < 100.0, values  # 50 Hz timer loop: at most a period plus processing
        assert float(values["latency_max_ms_total"]) >= p50
        assert 30.0 < float(values["rate_hz"]) < 70.0, values
        assert int(values["deadline_misses"]) >= 0 and "consecutive_misses" in values, values
        wait_until(lambda: len(peer.floats[f"/{MONITOR}/latency_ms"]) > 20, 10, "latency_ms")
        assert all(0.0 < x < 200.0 for x in peer.floats[f"/{MONITOR}/latency_ms"][-20:])
        wait_until(lambda: peer.floats[f"/{MONITOR}/latency_p99_ms"], 5, "latency_p99_ms")
        # stale input: the student answers with flagged fallback echoes, the monitor counts them
        before = int(values["student_fallbacks"])
        peer.publish_imu = False
        try:
            wait_until(lambda: latest_count(peer, "student_fallbacks") >= before + 10, 10,
                       "student fallbacks counted")
        finally:
            peer.publish_imu = True


class EchoTimes:
    """An outside observer: the publish time (DDS source timestamp) of every echo."""

    def __init__(self, peer: RobotPeer) -> None:
        self.sent_s: list = []
        self._peer = peer
        self._sub = peer.node.create_subscription(JointState, "policy_action", self._on_echo,
                                                  RECORD)

    def _on_echo(self, msg, info) -> None:
        self.sent_s.append(info["source_timestamp"] * 1e-9)

    def gaps_over(self, deadline_s: float) -> int:
        gaps = np.diff(np.array(self.sent_s))
        return int(np.sum(gaps > deadline_s))

    def close(self) -> None:
        self._peer.node.destroy_subscription(self._sub)


@pytest.mark.parametrize("trigger", ["timer", "on_message"])
def test_a_student_on_time_gets_no_monitor_command(peer, model, trigger):
    """A 500 Hz model fed by 100 Hz sensors: on_message acts once per input (10 ms apart), so
    the deadline is two input periods (20 ms), not two model periods (4 ms); a 100 Hz timer
    student has two control periods (20 ms). While the student
    is on time, the monitor publishes nothing; on this shared 2-core machine a sensor or the
    student is sometimes really late, so the property checked is: the monitor declares a
    fallback only for a gap an outside observer saw too (no gap: no monitor command)."""
    # timer: a 100 Hz loop (20 ms, two periods); on_message: a 500 Hz model acting on 100 Hz
    # sensors (20 ms: two input periods, where two model periods would be 4 ms)
    rate_hz = 100.0 if trigger == "timer" else 500.0
    with monitor(model, expected_rate_hz=rate_hz, deadline_s=0.0, trigger=trigger) as mon, \
            student(model, rate_hz=rate_hz, trigger=trigger, trigger_topic="joint_states",
                    deadline_s=0.0) as s:
        wait_nominal_and_ok(peer, (mon, s))
        observer = EchoTimes(peer)
        try:
            # counted from when the observer hears echoes: a new subscription is matched some
            # ms after it is created (CI once saw a real start-up gap declared then, which the
            # observer had not been matched in time to see)
            wait_until(lambda: len(observer.sent_s) >= 10, 10, "the observer hears echoes")
            fallbacks = len(peer.monitor_fallbacks)
            log = mon.node.read_log()
            declared, late = log.count("nominal -> fallback"), log.count("late delivery:")
            time.sleep(8.0)
        finally:
            observer.close()
        status = latest_status(peer)
        deadline_s = float(values_of(status)["deadline_ms"]) * 1e-3
        assert len(observer.sent_s) > 400, len(observer.sent_s)
        assert 0.019 < deadline_s < 0.025, values_of(status)
        monitor_commands = len(peer.monitor_fallbacks) - fallbacks
        late_gaps = observer.gaps_over(deadline_s)
        log = mon.node.read_log()
        declared = log.count("nominal -> fallback") - declared
        # echoes held up on their way to the monitor look like a silence when it must decide;
        # it says so once they arrive (docs/enforcement.md, late deliveries)
        late = log.count("late delivery:") - late
        if late_gaps == 0 and late == 0:  # no gap, no late delivery: no monitor command
            assert monitor_commands == 0, log[-2000:]
        # every other fallback answers a gap the observer saw (a gap may span two
        # declarations' boundary at most once each)
        assert declared - late <= late_gaps, (declared, late, late_gaps, log[-2000:])
        print(f"{trigger}: {len(observer.sent_s)} echoes, {late_gaps} gaps > deadline, "
              f"{declared} fallbacks ({late} late deliveries), {monitor_commands} monitor "
              "commands")


def test_killed_student_gets_a_held_fallback_then_a_new_student_takes_over(peer, model):
    with monitor(model) as mon:
        with student(model) as first:
            wait_nominal_and_ok(peer, (mon, first))
            since = len(peer.commands)
            first.node.kill()
            killed_s = peer.now_s()
            wait_until(lambda: len(peer.monitor_fallbacks) >= 1, 5, "first fallback")
            first_fallback_s = peer.now_s()
        # deadline 150 ms + watchdog period 75 ms, plus DDS and a loaded machine's scheduling
        assert first_fallback_s - killed_s < 0.5, first_fallback_s - killed_s
        status = wait_for_level(peer, DiagnosticStatus.ERROR, 10)
        assert "fallback" in status.message and values_of(status)["state"] == "fallback"
        wait_until(lambda: len(peer.monitor_fallbacks) >= 50, 5, "held fallback")
        wait_until(lambda: peer.states[-1] == "fallback", 5, "state on policy_enforcement")
        for echo in peer.monitor_fallbacks[-5:]:
            np.testing.assert_allclose(echo.position, DEFAULT_POSE)
        with student(model) as second:
            try:
                wait_nominal_and_ok(peer, (mon, second))
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n--- student log:\n{second.node.read_log()[-1500:]}"
                                     f"\n--- monitor log:\n{mon.node.read_log()[-1500:]}") \
                    from None
            assert_quiet_while_nominal(peer, mon)
            assert_no_alternation(command_pattern(peer, since), mon.node.read_log(), second)
            assert "commands withheld" in second.node.read_log()
        log = mon.node.read_log()   # once per change: as many returns as fallbacks
        assert log.count("fallback -> nominal") >= 1, log[-3000:]
        assert f"{RECOVERY_PERIODS} consecutive on-time actions" in log


def test_stalled_student_fallback_holds_then_control_returns(peer, model):
    """SIGSTOP for 0.5 s: the fallback starts, holds while the student is stopped and after it
    resumes (muted, it acts on time), and control returns after the recovery periods."""
    with monitor(model) as mon, student(model) as s:
        wait_nominal_and_ok(peer, (mon, s))
        since = len(peer.commands)
        os.kill(s.pid, signal.SIGSTOP)
        try:
            wait_until(lambda: peer.states[-1] == "fallback", 5, "fallback")
            time.sleep(0.5)
        finally:
            os.kill(s.pid, signal.SIGCONT)
        wait_nominal_and_ok(peer, (mon, s))
        time.sleep(0.5)
        pattern = command_pattern(peer, since)
        assert "F" in pattern and pattern.endswith("P"), pattern
        assert_no_alternation(pattern, mon.node.read_log(), s)
        # the student counted the stall as the monitor did (the same definition, core)
        mon_misses = latest_count(peer, "deadline_misses")
        assert mon_misses >= 3, mon_misses   # >= 0.5 s / 150 ms


def test_latched_stop_holds_until_reset(peer, model):
    with monitor(model, escalation="latch", max_consecutive_misses=5) as mon, \
            student(model) as s:
        wait_nominal_and_ok(peer, (mon, s))
        since = len(peer.commands)
        os.kill(s.pid, signal.SIGSTOP)
        try:
            wait_until(lambda: peer.states[-1] == "latched", 5, "latched")
        finally:
            os.kill(s.pid, signal.SIGCONT)
        wait_for_log(s.node, "inactive after", 10)   # the e-stop deactivated the student
        time.sleep(1.0)
        assert peer.states[-1] == "latched"
        status = wait_for_level(peer, DiagnosticStatus.ERROR, 5)
        assert status.message.startswith("latched"), status.message
        count = len(peer.monitor_fallbacks)
        time.sleep(0.3)
        assert len(peer.monitor_fallbacks) > count, "the latched fallback must hold"
        answer = peer.call(Trigger, f"/{MONITOR}/reset", Trigger.Request())
        assert answer.success, answer.message
        wait_nominal_and_ok(peer, (mon, s))
        time.sleep(0.3)
        assert_no_alternation(command_pattern(peer, since), mon.node.read_log(), s)
        assert not peer.call(Trigger, f"/{MONITOR}/reset", Trigger.Request()).success
        assert mon.node.read_log().count("-> latched") == 1


def test_a_stalled_monitor_does_not_blame_the_student(peer, model):
    """SIGSTOP the monitor for 0.4 s (2.7 deadlines), three times: the echoes queued meanwhile
    carry the student's publish times, so it counts exactly the misses an outside observer of
    the echoes counts (none, unless this shared machine really delayed the student) and
    declares a fallback only for a gap the observer saw too."""
    with monitor(model) as mon, student(model) as s:
        wait_nominal_and_ok(peer, (mon, s))
        observer = EchoTimes(peer)  # matched before the counts start (see on_time above)
        try:
            wait_until(lambda: len(observer.sent_s) >= 10, 10, "the observer hears echoes")
            time.sleep(1.2)  # the 1 Hz status read next is then younger than the observer
            misses = latest_count(peer, "deadline_misses")
            declared = mon.node.read_log().count("nominal -> fallback")
            for _ in range(3):
                os.kill(mon.pid, signal.SIGSTOP)
                time.sleep(0.4)
                os.kill(mon.pid, signal.SIGCONT)
                time.sleep(1.0)
            time.sleep(1.2)   # a diagnostics period after the last stall
            counted = latest_count(peer, "deadline_misses") - misses
        finally:
            observer.close()
        declared = mon.node.read_log().count("nominal -> fallback") - declared
        gaps = np.diff(np.array(observer.sent_s))
        seen = int(sum(int(g / DEADLINE_S + 1e-9) for g in gaps if g > DEADLINE_S))
        assert declared <= observer.gaps_over(DEADLINE_S), (declared, seen)
        assert abs(counted - seen) <= 1, (counted, seen, mon.node.read_log()[-2000:])
        print(f"stalled monitor: misses counted {counted}, seen by the observer {seen}, "
              f"fallbacks {declared}")
