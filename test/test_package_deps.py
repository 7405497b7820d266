"""package.xml declares what the code imports, and nothing it does not (rosdep installs from it).

Imports are read with `ast` from the package and launch files (exec_depend) and from test/
(test_depend, or exec_depend). An import inside `try: ... except ImportError` is optional and
needs no key. Python modules map to their rosdep keys (ros/rosdistro rosdep/python.yaml); a few
have no key and must then come from requirements/*.txt instead, which is checked too.
"""
from __future__ import annotations

import ast
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# import name -> rosdep key (ROS packages are their own key)
ROSDEP_KEYS = {
    "numpy": "python3-numpy", "yaml": "python3-yaml", "onnxruntime": "python3-onnxruntime-pip",
    "torch": "python3-torch", "mujoco": "python3-mujoco-pip",
    "gymnasium": "python3-gymnasium-pip", "rosbags": "python3-rosbags-pip",
    "tqdm": "python3-tqdm", "matplotlib": "python3-matplotlib", "pytest": "python3-pytest",
    "psutil": "python3-psutil", "stable_baselines3": "python3-stable-baselines3-pip",
    "backports": "python3-rosbags-pip", "lz4": "python3-rosbags-pip",  # rosbags requires them
}
# import name -> the requirements/*.txt line that installs it (no rosdep key exists)
PIP_ONLY = {"onnx": "onnx", "safetensors": "safetensors", "mcap": "mcap",
            "rsl_rl": "rsl-rl-lib", "tensordict": "rsl-rl-lib"}
ROS_PACKAGES = {"rclpy", "launch", "launch_ros", "ament_index_python"}
# Declared but not imported, with the reason.
RUN_NOT_IMPORTED = {"ros2launch": "the `ros2 launch` command that runs launch/*.launch.py",
                    "ament_index_python": "training.pipeline.find_config's share directory "
                                          "(an optional import: the repository works without)"}
TEST_NOT_IMPORTED = {"python3-pytest-timeout": "setup.cfg's pytest options pass --timeout"}


def _optional_lines(tree: ast.AST) -> set[int]:
    """Line numbers of imports guarded by `except ImportError` (or ModuleNotFoundError)."""
    lines = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Try):
            continue
        names = set()
        for handler in node.handlers:
            caught = handler.type
            for item in (caught.elts if isinstance(caught, ast.Tuple) else [caught]):
                names.add(getattr(item, "id", None))
        if names & {"ImportError", "ModuleNotFoundError"}:
            for stmt in node.body:
                lines.update(n.lineno for n in ast.walk(stmt) if hasattr(n, "lineno"))
    return lines


def imported_modules(paths) -> dict[str, str]:
    """Top-level modules imported unconditionally -> one file that imports it."""
    found: dict[str, str] = {}
    local = {p.stem for p in (REPO / "test").glob("*.py")} | {"policy_distill_ros"}
    for path in paths:
        tree = ast.parse(path.read_text(), filename=str(path))
        optional = _optional_lines(tree)
        where = str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) in optional:
                continue
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in local:
                    found.setdefault(top, where)
    return found


def key_of(module: str) -> str | None:
    if module in ROSDEP_KEYS:
        return ROSDEP_KEYS[module]
    if module in PIP_ONLY:
        return None
    if module in ROS_PACKAGES or module.endswith(("_msgs", "_srvs", "_interfaces")):
        return module
    raise AssertionError(f"import {module!r}: no rosdep key known; add it to ROSDEP_KEYS or "
                         f"PIP_ONLY in {Path(__file__).name}")


def declared(tag: str) -> set[str]:
    root = ET.parse(REPO / "package.xml").getroot()
    return {e.text.strip() for e in root.iter(tag)} | {e.text.strip() for e in root.iter("depend")}


def requirement_names() -> set[str]:
    names = set()
    for path in (REPO / "requirements").glob("*.txt"):
        for line in path.read_text().splitlines():
            line = line.split("#")[0].strip()
            if line and not line.startswith("-"):
                names.add(re.split(r"[<>=\[ ;]", line)[0].lower())
    return names


def package_files() -> list[Path]:
    return sorted((REPO / "policy_distill_ros").rglob("*.py")) + sorted(
        (REPO / "launch").glob("*.launch.py"))


def test_exec_depends_match_the_imports() -> None:
    imports = imported_modules(package_files())
    needed = {key_of(m): where for m, where in imports.items() if key_of(m)}
    exec_deps = declared("exec_depend")
    missing = {key: where for key, where in needed.items() if key not in exec_deps}
    assert not missing, f"package.xml lacks exec_depend for (key: imported in) {missing}"
    unused = exec_deps - set(needed) - set(RUN_NOT_IMPORTED)
    assert not unused, f"package.xml exec_depends nothing imports: {sorted(unused)}"


def test_test_depends_cover_what_only_the_tests_import() -> None:
    imports = imported_modules(sorted((REPO / "test").glob("*.py")))
    needed = {key_of(m): where for m, where in imports.items() if key_of(m)}
    available = declared("exec_depend") | declared("test_depend")
    missing = {key: where for key, where in needed.items() if key not in available}
    assert not missing, f"package.xml lacks test_depend for (key: imported in) {missing}"
    test_only = declared("test_depend") - set(needed) - set(TEST_NOT_IMPORTED)
    assert not test_only, f"package.xml test_depends nothing imports: {sorted(test_only)}"
    assert "--timeout" in (REPO / "setup.cfg").read_text()  # why pytest-timeout is needed


def test_modules_without_a_rosdep_key_come_from_requirements() -> None:
    imports = imported_modules(package_files() + sorted((REPO / "test").glob("*.py")))
    names = requirement_names()
    missing = {m: PIP_ONLY[m] for m in imports if m in PIP_ONLY and PIP_ONLY[m] not in names}
    assert not missing, f"imported, no rosdep key, and not in requirements/*.txt: {missing}"


def test_the_import_scan_sees_optional_imports_as_optional(tmp_path: Path) -> None:
    source = tmp_path / "probe.py"
    source.write_text("import numpy\ntry:\n    import lz4.frame\nexcept ImportError:\n"
                      "    pass\nfrom torch import nn\n")
    assert set(imported_modules([source])) == {"numpy", "torch"}
