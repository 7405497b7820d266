"""Real-time scheduling for a control process (Linux SCHED_FIFO), as ros2_control offers it.

On a shared robot computer a 500 Hz policy competes with everything else for the CPU; under
normal scheduling a busy neighbour can delay its wake-up by milliseconds. SCHED_FIFO makes the
policy's threads run as soon as their message arrives. It needs permission (root,
CAP_SYS_NICE, or an `rtprio` limit in /etc/security/limits.conf); without it nothing changes
and the reason is returned for the log. The kernel's RT throttling (sched_rt_runtime_us) still
leaves other processes a share of each core.
"""
from __future__ import annotations

import os

__all__ = ["set_realtime_priority", "MAX_PRIORITY"]

MAX_PRIORITY = 99


def set_realtime_priority(priority: int) -> str | None:
    """SCHED_FIFO at `priority` (1..99) for every thread of this process, present and future
    (threads inherit their creator's policy). Returns None on success, else why not."""
    if isinstance(priority, bool) or not isinstance(priority, int) \
            or not 1 <= priority <= MAX_PRIORITY:
        raise ValueError(f"realtime priority must be an integer in 1..{MAX_PRIORITY}, got "
                         f"{priority!r}")
    if not hasattr(os, "sched_setscheduler"):
        return "this platform has no sched_setscheduler (SCHED_FIFO needs Linux)"
    param = os.sched_param(priority)
    try:
        threads = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        threads = [0]
    for tid in threads:
        try:
            os.sched_setscheduler(tid, os.SCHED_FIFO, param)
        except ProcessLookupError:
            continue  # the thread ended meanwhile
        except PermissionError:
            return (f"SCHED_FIFO priority {priority} not permitted (needs root, CAP_SYS_NICE "
                    "or an rtprio limit); running with normal scheduling")
    return None
