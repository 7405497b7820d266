"""Start package nodes as real processes for end-to-end tests, and always end them by pid.

Thin test-facing wrapper over `policy_distill_ros.processes`, which the CLI uses too.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

from policy_distill_ros.processes import NodeProcess, write_params_file

write_params = write_params_file


@contextlib.contextmanager
def node_process(module: str, node_name: str, params: Mapping | None = None,
                 extra_args: tuple = (), env: Mapping[str, str] | None = None,
                 log_path: str | None = None) -> Iterator[NodeProcess]:
    """Run `python -m policy_distill_ros.nodes.<module>` with a params file; SIGINT, then kill.

    Yields the `subprocess.Popen` (with `.log_path` and `.node` set) for compatibility.
    """
    node = NodeProcess(module, node_name, params or {}, tuple(extra_args), dict(env or {}),
                       log_path).start()
    proc = node.proc
    proc.log_path = node.log_path  # type: ignore[attr-defined]
    proc.node = node  # type: ignore[attr-defined]
    try:
        yield proc
    finally:
        node.stop()


def read_log(proc) -> str:
    with open(proc.log_path, errors="replace") as f:
        return f.read()
