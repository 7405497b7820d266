"""Start package nodes as child processes and always end them, by pid.

`ros2 launch` is not available everywhere (it has no PyPI wheel), so the CLI and the end-to-end
tests start the very same node executables this way. Each child gets a params file keyed by its
node name, exactly what a launch file would pass.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]


def write_params_file(node_name: str, params: Mapping, directory: str | None = None) -> str:
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
    log_path: str | None = None
    proc: subprocess.Popen | None = None
    _params_path: str | None = None

    def start(self) -> NodeProcess:
        args: list[str] = [sys.executable, "-u", "-m", f"policy_distill_ros.nodes.{self.module}",
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

    def stop(self, timeout_s: float = 10.0) -> int | None:
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

    def __enter__(self) -> NodeProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class CliPeer:
    """The CLI's own small ROS node (listening to what its children publish), spun on demand.

    rclpy gets no signal handlers, so Ctrl-C stays a KeyboardInterrupt in the command, which
    then stops every child by pid.
    """

    def __init__(self, node_name: str) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.signals import SignalHandlerOptions

        rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
        self._rclpy = rclpy
        self.node = rclpy.create_node(node_name)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)

    def spin_for(self, seconds: float, step_s: float = 0.1) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=max(0.0, min(step_s, end - time.monotonic())))

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        self._rclpy.try_shutdown()


def log_directory(log_dir: str | None, prefix: str) -> Path:
    """Where a command's node logs go: `log_dir` (created), else a new temporary directory."""
    path = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix=prefix))
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """A supervisor's SIGTERM becomes a KeyboardInterrupt, so the children are stopped the
    same way as on Ctrl-C."""
    def interrupt(signum, frame) -> None:
        raise KeyboardInterrupt
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
