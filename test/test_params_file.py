"""Params files apply under any namespace, and the CLI reads them the way rcl does.

The shipped config/*.yaml key their blocks `/**/<node>`; a bare `student_node:` would match only
`/student_node` and silently give a namespaced node its defaults. `params_file.node_params` (used
by the CLI and the simulator config) is checked against rcl itself: a real rclpy node started
with the same `--params-file` in each namespace.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from policy_distill_ros.params_file import flat_params, node_blocks, node_params, pattern_matches

REPO = Path(__file__).resolve().parents[1]
NAMESPACES = ["/", "/robot1", "/fleet/robot2"]
BUILT_IN = {"use_sim_time", "start_type_description_service"}   # every rclpy node declares them


def shipped_blocks() -> list[tuple[str, str]]:
    found = []
    for path in sorted((REPO / "config").glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        if isinstance(data, dict):
            found += [(path.name, key) for key, _ in node_blocks(data)]
    return found


def test_shipped_params_files_have_node_blocks() -> None:
    files = {name for name, _ in shipped_blocks()}
    assert {"student.yaml", "teacher.yaml", "sim.yaml", "recorder.yaml"} <= files


@pytest.mark.parametrize("file_name,key", shipped_blocks(), ids=lambda v: v)
def test_shipped_blocks_apply_under_any_namespace(file_name: str, key: str) -> None:
    node = key.rsplit("/", 1)[-1]
    for namespace in NAMESPACES:
        assert pattern_matches(key, node, namespace), \
            f"{file_name}: block '{key}' does not apply to {namespace.rstrip('/')}/{node}"


RCL_FILE = {
    "student_node": {"ros__parameters": {"a": 1, "b": "root-only"}},
    "/**/student_node": {"ros__parameters": {"a": 2, "c": 0.5}},
    "/robot1/student_node": {"ros__parameters": {"a": 3, "nested": {"x": 1}}},
    "/*/student_node": {"ros__parameters": {"d": True}},
    "/**": {"ros__parameters": {"e": "everyone"}},
    "/fleet/**/student_node": {"ros__parameters": {"f": 7}},
    "other_node": {"ros__parameters": {"a": 99}},
}


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_node_params_matches_what_rcl_gives_the_node(tmp_path: Path, namespace: str) -> None:
    import rclpy
    from rclpy.node import Node
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(RCL_FILE, sort_keys=False))
    context = rclpy.Context()
    rclpy.init(args=["--ros-args", "--params-file", str(path)], context=context)
    try:
        node = Node("student_node", namespace=namespace, context=context,
                    automatically_declare_parameters_from_overrides=True)
        rcl = {name: p.value for name, p in node._parameters.items() if name not in BUILT_IN}
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
    ours = flat_params(node_params(path, "student_node", namespace))
    assert ours == rcl, f"namespace {namespace}"
    assert ours["e"] == "everyone"   # sanity: the file did reach the node


def test_node_params_of_a_bare_mapping_and_missing_node(tmp_path: Path) -> None:
    assert node_params(RCL_FILE, "nobody", "/x") == {"e": "everyone"}
    assert node_params({"not": "a params file"}, "student_node") == {}
