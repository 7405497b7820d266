"""What launch/*.launch.py share: every node they start is required (imported by launch files only).

A node that ends while the launch runs takes the whole launch down instead of leaving the rest
running unsupervised (a student without its timing monitor, a recording without its recorder).
No respawn: a restarted student would act again at once with fresh state while the fault that
ended it stays unseen; restarting is for whoever supervises `ros2 launch` (systemd
`Restart=on-failure`, a fleet manager), and the launch's exit code tells them:

- the node exited 0 (e.g. sim_node after `num_episodes`): orderly shutdown, exit code 0;
- it failed (non-zero code or a signal): one error line naming it, shutdown, exit code 1.

During a shutdown (Ctrl-C, or another node's exit) the nodes' own exits are expected: ignored.
"""
from __future__ import annotations

from collections.abc import Callable

from launch.actions import Shutdown


class RequiredNodeExited(RuntimeError):
    """Raised from the exit handler: `ros2 launch` logs the message, shuts down, returns 1."""


def required(node_name: str) -> Callable:
    """`on_exit=` for a launch_ros Node: its exit ends the launch (see the module docstring)."""

    def on_exit(event, context) -> list | None:
        if context.is_shutdown:
            return None
        if event.returncode == 0:
            return [Shutdown(reason=f"{node_name} finished")]
        raise RequiredNodeExited(f"required node {node_name} exited with code "
                                 f"{event.returncode}: stopping every node of this launch")

    return on_exit
