"""Start package nodes as child processes and always end them, by pid.

`ros2 launch` is not available everywhere (it has no PyPI wheel), so the CLI and the end-to-end
tests start the very same node executables this way. Each child gets a params file keyed by its
node name, exactly what a launch file would pass.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Mapping, Optional, Sequence

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]


def write_params_file(node_name: str, params: Mapping, directory: Optional[str] = None) -> str:
    """A ROS params file `{node_name: {ros__parameters: ...}}`, the format `--params-file` reads."""
    fd, path = tempfile.mkstemp(prefix=f"{node_name}_", suffix=".yaml", dir=directory)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump({node_name: {"ros__parameters": dict(params)}}, f)
    return path


@dataclass
class NodeProcess:
    """One node running as a child process, its output in `log_path`."""

    module: str
    node_name: str
    params: Mapping = field(default_factory=dict)
    ros_args: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    log_path: Optional[str] = None
    proc: Optional[subprocess.Popen] = None
    _params_path: Optional[str] = None

    def start(self) -> "NodeProcess":
        args: List[str] = [sys.executable, "-u", "-m", f"policy_distill_ros.nodes.{self.module}",
                           "--ros-args", "-r", f"__node:={self.node_name}"]
        if self.params:
            self._params_path = write_params_file(self.node_name, self.params)
            args += ["--params-file", self._params_path]
        args += list(self.ros_args)
        env = dict(os.environ)
        env.update(self.env)
        env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        if self.log_path is None:
            self.log_path = tempfile.mkstemp(prefix=f"{self.node_name}_", suffix=".log")[1]
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         cwd=str(REPO_ROOT))
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 10.0) -> Optional[int]:
        """SIGINT (what Ctrl-C sends, so nodes close bags and stop loops), then SIGKILL."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._params_path and os.path.exists(self._params_path):
            os.unlink(self._params_path)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL, for fault-injection tests."""
        if self.alive():
            self.proc.kill()
            self.proc.wait()

    def read_log(self) -> str:
        if not self.log_path or not os.path.exists(self.log_path):
            return ""
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def __enter__(self) -> "NodeProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
