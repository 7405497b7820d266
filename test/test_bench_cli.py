"""`policy-distill bench`: finds the repository's benchmarks and runs the one named."""
from __future__ import annotations

import subprocess
import sys

CLI = [sys.executable, "-m", "policy_distill_ros.cli", "bench"]


def test_lists_every_benchmark_script_with_its_summary():
    out = subprocess.run(CLI, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for name in ("student_latency", "recorder_throughput", "distill_methods", "train_throughput"):
        assert name in out.stdout
    assert "baseline_node" not in out.stdout   # a helper the benchmarks import


def test_runs_a_named_benchmark_with_its_arguments_and_refuses_unknown_ones():
    out = subprocess.run([*CLI, "loop_timer", "--", "--duration-s", "0.3", "--spin-us", "0"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "=== bench/loop_timer.py --duration-s 0.3" in out.stdout
    bad = subprocess.run([*CLI, "no_such_bench"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown benchmark(s) no_such_bench" in bad.stderr
