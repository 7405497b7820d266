"""Layering: core/ never pulls rclpy, message packages or torch; the student node never pulls torch.

Each import runs in a fresh interpreter, so what other tests imported cannot hide a violation.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORE_MODULES = sorted(f"policy_distill_ros.core.{p.stem}"
                      for p in (REPO / "policy_distill_ros" / "core").glob("*.py")
                      if p.stem != "__init__")

PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(sys.modules)))
"""


def imported_by(module: str) -> list[str]:
    result = subprocess.run([sys.executable, "-c", PROBE, module], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, f"importing {module} failed:\n{result.stderr}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def forbidden(modules: list[str], torch_only: bool = False) -> list[str]:
    bad = []
    for name in modules:
        top = name.split(".")[0]
        if top == "torch":
            bad.append(name)
        elif not torch_only and (top in ("rclpy", "rosbags") or top.endswith("_msgs")
                                 or top.endswith("_interfaces")):
            bad.append(name)
    return bad


def test_core_modules_are_found():
    assert {"policy_distill_ros.core.spec", "policy_distill_ros.core.observation",
            "policy_distill_ros.core.policy_file", "policy_distill_ros.core.timing"} <= set(
        CORE_MODULES)


@pytest.mark.parametrize("module", CORE_MODULES + ["policy_distill_ros.core"])
def test_core_imports_no_ros_and_no_torch(module):
    bad = forbidden(imported_by(module))
    assert not bad, f"{module} pulls in {bad[:10]}"


def test_student_node_does_not_import_torch():
    if not (REPO / "policy_distill_ros" / "nodes" / "student_node.py").exists():
        pytest.skip("policy_distill_ros/nodes/student_node.py does not exist yet")
    bad = forbidden(imported_by("policy_distill_ros.nodes.student_node"), torch_only=True)
    assert not bad, f"student_node pulls in {bad[:10]}"
