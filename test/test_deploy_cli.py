"""`policy-distill deploy` end to end: real child processes, DDS, ONNX Runtime (and MuJoCo).

Figures are checked for being there and finite, never for timing values (a shared 2-core
machine); every child the CLI started must be gone when it returns, also after Ctrl-C.
"""
from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ros_harness import wait_until

pytestmark = [pytest.mark.dds, pytest.mark.timeout(240)]

REPO = Path(__file__).resolve().parents[1]
FIGURES = ("actions", "action_rate_hz", "latency_p50_ms", "latency_p99_ms", "latency_max_ms",
           "jitter_ms", "deadline_misses", "student_fallbacks", "monitor_fallbacks")


def deploy(*args: str, timeout_s: float = 150.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "policy_distill_ros.cli", "deploy", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout_s,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))


def started_pids(log: str) -> list[int]:
    return [int(pid) for pid in re.findall(r"started \w+ \(pid (\d+)\)", log)]


def assert_all_gone(pids: list[int]) -> None:
    assert len(pids) == 3, pids
    for pid in pids:
        wait_until(lambda pid=pid: not _alive(pid), 5, f"child {pid} to be gone")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie of an exited child would still answer; the CLI reaps its children
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split()[2] != "Z"


def check_report(result: subprocess.CompletedProcess, json_path: Path) -> dict:
    assert result.returncode == 0, result.stdout + result.stderr
    for label in ("latency p99 (ms)", "action rate (Hz)", "deadline misses",
                  "fallback actions (student)", "fallback commands (monitor)"):
        assert label in result.stdout, result.stdout
    report = json.loads(json_path.read_text())
    figures = report["figures"]
    assert set(FIGURES) <= set(figures)
    assert all(math.isfinite(figures[k]) for k in FIGURES), figures
    assert figures["actions"] > 0 and figures["action_rate_hz"] > 0, figures
    assert 0 <= figures["latency_p50_ms"] <= figures["latency_p99_ms"] <= figures["latency_max_ms"]
    memory = report["student_memory_mib"]   # a Python node with onnxruntime: tens of MiB
    assert 10 < memory["rss_mib"] <= memory["peak_mib"] < 2000, memory
    assert "student node memory: RSS" in result.stdout
    assert_all_gone(started_pids(result.stderr))
    return report


def test_deploy_stream_prints_and_writes_monitor_figures(tmp_path):
    out = tmp_path / "figures.json"
    result = deploy("--duration-s", "5", "--json", str(out), "--log-dir", str(tmp_path / "logs"))
    report = check_report(result, out)
    assert report["source"] == "stream" and report["sensor_rate_hz"] == 500.0
    # 5 s of a 500 Hz on_message student: thousands of actions even on a loaded machine
    assert report["figures"]["actions"] > 500, report
    student_log = (tmp_path / "logs" / "student_node.log").read_text()
    assert "active: publishing policy_command" in student_log
    if report["demo_model"]:
        assert "RANDOM weights" in result.stderr


def test_deploy_sim_student_drives_the_ant(tmp_path):
    out = tmp_path / "figures.json"
    result = deploy("--source", "sim", "--duration-s", "5", "--json", str(out),
                    "--log-dir", str(tmp_path / "logs"))
    report = check_report(result, out)
    assert report["sim_time"] and report["source"] == "sim"
    assert report["figures"]["actions"] > 20, report  # 20 Hz sim control rate
    sim_log = (tmp_path / "logs" / "sim_node.log").read_text()
    assert "policy_command ignored" not in sim_log, sim_log  # joint order resolved by name
    assert "sim time" in result.stdout


def test_ctrl_c_stops_every_child(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "policy_distill_ros.cli", "deploy",
                             "--duration-s", "120", "--log-dir", str(tmp_path / "logs")],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        deadline = time.monotonic() + 90
        err = ""
        while "actions flowing" not in err:
            assert time.monotonic() < deadline and proc.poll() is None, err
            err += proc.stderr.readline()
        proc.send_signal(signal.SIGINT)
        _, rest = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err + rest
    assert_all_gone(started_pids(err))
