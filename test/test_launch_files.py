"""Launch files and params files are checked without `launch` installed (it has no PyPI wheel).

Every launch/*.launch.py is parsed with `ast`: the executables its Node(...) actions name must be
console scripts in setup.py, and the config/model files it names must exist. Every parameter in a
node block of config/*.yaml must be one that node really declares: each node is constructed
in-process under rclpy (autostart off), recording every declare_parameter call. And colcon
builds and installs the package the way a ROS workspace would.
"""
from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from policy_distill_ros.params_file import node_params

REPO = Path(__file__).resolve().parents[1]
LAUNCH_FILES = sorted((REPO / "launch").glob("*.launch.py"))
PARAM_FILES = sorted((REPO / "config").rglob("*.yaml"))


def console_scripts() -> set[str]:
    """Executable names from setup.py, read from the NODES table + entry points by `ast`."""
    tree = ast.parse((REPO / "setup.py").read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "NODES"
                                                for t in node.targets):
            names.update(ast.literal_eval(node.value).keys())
        if isinstance(node, ast.JoinedStr) or not isinstance(node, ast.Constant):
            continue
        if isinstance(node.value, str):
            match = re.match(r"^([\w\-]+)=policy_distill_ros\.", node.value)
            if match:
                names.add(match.group(1))
    return names


def node_calls(tree: ast.AST) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and getattr(n.func, "id", getattr(n.func, "attr", None)) == "Node"]


def keyword(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    return None


def literal(value, tree: ast.Module):
    """A string literal, or a module-level `NAME = "literal"` constant it refers to."""
    if isinstance(value, ast.Constant):
        return value.value
    if isinstance(value, ast.Name):
        for node in tree.body:
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and \
                    any(getattr(t, "id", None) == value.id for t in node.targets):
                return node.value.value
    return None


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_structure(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in functions, f"{path.name}: no entry point"
    calls = node_calls(tree)
    assert calls, f"{path.name}: starts no Node"
    scripts = console_scripts()
    for call in calls:
        exe = literal(keyword(call, "executable"), tree)
        assert exe is not None, f"{path.name}: executable must be a literal"
        assert exe in scripts, f"{path.name}: executable {exe!r} not in setup.py"
        assert literal(keyword(call, "package"), tree) == "policy_distill_ros"
    # Files named by the launch file: literals ending in .yaml/.onnx, looked up in config/, models/
    named = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
             and isinstance(n.value, str) and re.search(r"\.(yaml|onnx)$", n.value)]
    assert named, f"{path.name}: names no params file"
    for name in named:
        candidates = [REPO / "config" / name, REPO / "models" / name, REPO / name]
        assert any(c.is_file() for c in candidates), f"{path.name}: names missing file {name}"
    # Launch arguments used through LaunchConfiguration must be declared.
    declared = {ast.literal_eval(c.args[0]) for c in ast.walk(tree) if isinstance(c, ast.Call)
                and getattr(c.func, "id", "") == "DeclareLaunchArgument"}
    used = {ast.literal_eval(c.args[0]) for c in ast.walk(tree) if isinstance(c, ast.Call)
            and getattr(c.func, "id", "") == "LaunchConfiguration"}
    assert used <= declared, f"{path.name}: undeclared launch arguments {used - declared}"


def test_student_launch_arguments() -> None:
    tree = ast.parse((REPO / "launch" / "student.launch.py").read_text())
    declared = {ast.literal_eval(c.args[0]) for c in ast.walk(tree) if isinstance(c, ast.Call)
                and getattr(c.func, "id", "") == "DeclareLaunchArgument"}
    assert {"model", "params_file", "namespace", "use_sim_time"} <= declared
    executables = {literal(keyword(c, "executable"), tree) for c in node_calls(tree)}
    assert executables == {"student_node", "timing_monitor_node"}


_DECLARED_SCRIPT = r"""
import importlib, inspect, json, sys
import rclpy
from rclpy.node import Node
names = []
original = Node.declare_parameter
def recording(self, name, *args, **kw):
    names.append(name)
    return original(self, name, *args, **kw)
Node.declare_parameter = recording
rclpy.init(args=["--ros-args", "-p", "autostart:=false"])
module = importlib.import_module("policy_distill_ros.nodes." + sys.argv[1])
classes = [c for _, c in inspect.getmembers(module, inspect.isclass)
           if issubclass(c, Node) and c.__module__ == module.__name__
           and not c.__name__.startswith("_")]
error = None
for cls in classes:
    try:
        node = cls()
        names.extend(node._parameters.keys())
        node.destroy_node()
    except BaseException as exc:  # declared names before a validation error still count
        error = repr(exc)
print(json.dumps({"names": sorted(set(names)), "classes": [c.__name__ for c in classes],
                  "error": error}))
rclpy.try_shutdown()
"""


def declared_parameters(executable: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", _DECLARED_SCRIPT, executable], cwd=str(REPO),
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(
                             filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))})
    assert out.returncode == 0, f"{executable}: {out.stderr[-2000:]}"
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["classes"], f"{executable}: module defines no Node class"
    return set(result["names"])


def _flatten(params: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in params.items():
        if isinstance(value, dict):
            keys += _flatten(value, f"{prefix}{key}.")
        else:
            keys.append(f"{prefix}{key}")
    return keys


def param_blocks() -> list[tuple[str, str, list[str]]]:
    blocks = []
    for path in PARAM_FILES:
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            continue
        for node_name, block in data.items():
            if isinstance(block, dict) and "ros__parameters" in block:
                blocks.append((path.name, node_name.rsplit("/", 1)[-1],
                               _flatten(block["ros__parameters"])))
    return blocks


def test_params_files_found() -> None:
    names = {name for _, name, _ in param_blocks()}
    assert {"student_node", "timing_monitor_node"} <= names


@pytest.mark.parametrize("file_name,node_name,keys", param_blocks(),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_params_file_names_only_declared_parameters(file_name, node_name, keys) -> None:
    assert node_name in console_scripts(), \
        f"{file_name}: block '{node_name}' is not a node executable of this package"
    declared = declared_parameters(node_name)
    unknown = sorted(set(keys) - declared)
    assert not unknown, f"{file_name}: {node_name} does not declare {unknown}"


def test_colcon_build_installs_package(tmp_path: Path) -> None:
    colcon = Path(sys.executable).parent / "colcon"
    if not colcon.exists():
        pytest.skip("colcon not installed in this environment")
    build, install, log = tmp_path / "build", tmp_path / "install", tmp_path / "log"
    out = subprocess.run([str(colcon), "--log-base", str(log), "build", "--base-paths", str(REPO),
                          "--build-base", str(build), "--install-base", str(install)],
                         cwd=str(tmp_path), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    share = install / "policy_distill_ros" / "share" / "policy_distill_ros"
    lib = install / "policy_distill_ros" / "lib" / "policy_distill_ros"
    for launch_file in LAUNCH_FILES:
        assert (share / "launch" / launch_file.name).is_file()
    for yaml_file in (REPO / "config").rglob("*.yaml"):
        assert (share / yaml_file.relative_to(REPO)).is_file(), f"{yaml_file} not installed"
    shipped = [p for p in (REPO / "models").rglob("*")
               if p.is_file() and p.suffix in (".onnx", ".json", ".safetensors", ".png", ".yaml")]
    for model_file in shipped:
        assert (share / model_file.relative_to(REPO)).is_file(), f"{model_file} not installed"
    for exe in ("student_node", "timing_monitor_node", "sim_node", "recorder_node"):
        assert os.access(lib / exe, os.X_OK), f"{exe} not installed in lib/policy_distill_ros"
    assert (install / "policy_distill_ros" / "share" / "ament_index" / "resource_index" /
            "packages" / "policy_distill_ros").is_file()
    # `source install/setup.bash` alone (nothing hand-set) puts the installed copy first on
    # PYTHONPATH and the prefix on AMENT_PREFIX_PATH; the installed console script then runs.
    clean = {k: v for k, v in os.environ.items()
             if k not in ("PYTHONPATH", "AMENT_PREFIX_PATH", "COLCON_PREFIX_PATH")}
    clean["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), clean.get("PATH", "")])
    probe = (f". '{install}/setup.bash' && echo \"$AMENT_PREFIX_PATH\" && "
             "python -c 'import policy_distill_ros as p; print(p.__file__)' && "
             f"'{lib}/policy-distill' --help")
    out = subprocess.run(["bash", "-c", probe], cwd=str(tmp_path), env=clean,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    prefix, module_file = out.stdout.splitlines()[:2]
    assert str(install / "policy_distill_ros") in prefix.split(os.pathsep)
    assert Path(module_file).is_relative_to(install), \
        f"setup.bash did not put the installed package first: {module_file}"
    assert "usage: policy-distill" in out.stdout


def test_teacher_sim_launch_arguments() -> None:
    tree = ast.parse((REPO / "launch" / "teacher_sim.launch.py").read_text())
    declared = {ast.literal_eval(c.args[0]) for c in ast.walk(tree) if isinstance(c, ast.Call)
                and getattr(c.func, "id", "") == "DeclareLaunchArgument"}
    assert {"use_embedded_sim", "teacher", "params_file", "record", "namespace",
            "use_sim_time"} <= declared
    calls = node_calls(tree)
    executables = {literal(keyword(c, "executable"), tree) for c in calls}
    assert executables == {"sim_node", "teacher_node", "recorder_node", "timing_monitor_node"}
    # the simulator and the recorder are switchable, the teacher always runs
    conditional = {literal(keyword(c, "executable"), tree) for c in calls
                   if keyword(c, "condition") is not None}
    assert conditional == {"sim_node", "recorder_node"}
    for node in ("teacher_node", "recorder_node", "timing_monitor_node"):
        assert node_params(REPO / "config" / "teacher.yaml", node, "/sim1"), node


def test_gazebo_bridge_example_maps_the_teacher_topics() -> None:
    entries = yaml.safe_load((REPO / "config" / "gazebo_bridge_example.yaml").read_text())
    assert isinstance(entries, list) and entries, "a ros_gz_bridge config is a list of entries"
    keys = {"ros_topic_name", "gz_topic_name", "ros_type_name", "gz_type_name", "direction"}
    for entry in entries:
        assert set(entry) == keys, entry
        assert entry["direction"] in ("GZ_TO_ROS", "ROS_TO_GZ", "BIDIRECTIONAL")
    by_topic = {e["ros_topic_name"]: e["ros_type_name"] for e in entries}
    assert by_topic["joint_states"] == "sensor_msgs/msg/JointState"
    assert by_topic["imu"] == "sensor_msgs/msg/Imu"
    assert by_topic["privileged/odometry"] == "nav_msgs/msg/Odometry"
    assert by_topic["/clock"] == "rosgraph_msgs/msg/Clock"
    assert sum(t == "ros_gz_interfaces/msg/Contacts" for t in by_topic.values()) == 4
