"""The main job end to end: `policy-distill demo --quick` through real nodes, DDS, torch and ONNX.

The quick run shrinks every stage (2 short episodes, 3 epochs, 3 s deployments); the full demo
runs the same code with the default sizes.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.dds
@pytest.mark.slow
def test_demo_quick_runs_every_stage_to_a_report(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "policy_distill_ros.cli", "demo", "--quick",
                           "--no-progress", "--out", str(out)],
                          cwd=str(REPO), capture_output=True, text=True, timeout=900,
                          env=dict(os.environ))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    report = (out / "report.md").read_text()
    for row in ("mean return, held-out episodes", "parameters", "ONNX size",
                "inference latency p50 / p99", "loop latency p50 / p99", "deadline misses"):
        assert row in report, f"report lacks '{row}'"
    assert (out / "returns.png").stat().st_size > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["param_ratio"] <= 0.02
    assert summary["export"]["max_abs_error"] <= 1e-5
    assert summary["demonstration_episodes"] == 2
    # DAgger: round 1 in-process, round 2 (the last) through the ROS nodes, data aggregated
    rounds = summary["dagger_rounds"]
    assert [r["via"] for r in rounds[1:]] == ["in-process", "ros"]
    assert summary["dagger_episodes"] == 4 and summary["ros_dagger_episodes"] == 2
    assert [r["dataset_samples"] for r in rounds] == list(
        np.cumsum([r["new_samples"] for r in rounds]))
    assert rounds[1]["beta"] > 0 and rounds[2]["beta"] == 0.0   # beta 0: label mode via ROS
    assert summary["selected_round"] in (0, 1, 2)
    assert (out / "dagger_rounds.png").stat().st_size > 0
    assert summary["deploy_sim"]["actions"] > 0

    from policy_distill_ros.core.policy_file import OnnxPolicy
    from policy_distill_ros.core.spec import load_policy_spec
    policy = OnnxPolicy(str(out / "dagger" / "student.onnx"),
                        load_policy_spec(REPO / "config/specs/ant_student.yaml"))
    assert policy.spec.observation.privileged_topics == ()


def test_demo_resume_needs_an_earlier_run(tmp_path: Path) -> None:
    from policy_distill_ros import cli
    assert cli.main(["demo", "--resume-from", "dagger", "--out", str(tmp_path / "none"),
                     "--no-progress"]) == 1
    assert not (tmp_path / "none").exists()
