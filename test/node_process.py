"""Start package nodes as real processes for end-to-end tests, and always end them by pid."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator, Mapping, Optional

import yaml

REPO = Path(__file__).resolve().parents[1]


def write_params(node_name: str, params: Mapping, directory: Optional[str] = None) -> str:
    """A ROS params file keyed by node name, the format launch files and `--params-file` use."""
    fd, path = tempfile.mkstemp(prefix=f"{node_name}_", suffix=".yaml", dir=directory)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump({node_name: {"ros__parameters": dict(params)}}, f)
    return path


@contextlib.contextmanager
def node_process(module: str, node_name: str, params: Optional[Mapping] = None,
                 extra_args: tuple = (), env: Optional[Mapping[str, str]] = None,
                 log_path: Optional[str] = None) -> Iterator[subprocess.Popen]:
    """Run `python -m policy_distill_ros.nodes.<module>` with a params file; SIGINT, then kill.

    Output goes to `log_path` (a temp file by default) so a failing test can print it.
    """
    args = [sys.executable, "-u", "-m", f"policy_distill_ros.nodes.{module}", "--ros-args",
            "-r", f"__node:={node_name}"]
    params_path = None
    if params:
        params_path = write_params(node_name, params)
        args += ["--params-file", params_path]
    args += list(extra_args)
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
    log_path = log_path or tempfile.mkstemp(prefix=f"{node_name}_", suffix=".log")[1]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=full_env,
                                cwd=str(REPO))
    proc.log_path = log_path  # type: ignore[attr-defined]
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if params_path:
            os.unlink(params_path)


def read_log(proc) -> str:
    with open(proc.log_path) as f:
        return f.read()
