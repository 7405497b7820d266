"""Resident memory of a process, from Linux's /proc (no dependency, no rclpy, no torch)."""
from __future__ import annotations

__all__ = ["process_memory_mib"]


def process_memory_mib(pid: int | str = "self") -> dict[str, float]:
    """{'rss_mib': resident now, 'peak_mib': the high-water mark} of a process; {} when it is
    gone or /proc is not there (not Linux)."""
    out: dict[str, float] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key == "VmRSS":
                    out["rss_mib"] = int(value.split()[0]) / 1024
                elif key == "VmHWM":
                    out["peak_mib"] = int(value.split()[0]) / 1024
    except (OSError, ValueError, IndexError):
        return {}
    return out
