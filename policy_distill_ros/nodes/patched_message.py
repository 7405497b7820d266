"""Publishing a message type whose layout never changes from one preallocated CDR buffer."""
from __future__ import annotations

import numpy as np

__all__ = ["PatchedMessage"]


class PatchedMessage:
    """A message serialized once; per publish only numbers at fixed byte offsets change.

    rclpy's message conversion (Python object -> C struct -> CDR) costs ~15 us for a JointState
    of 12 joints; patching a preallocated CDR buffer and publishing the bytes costs ~4 us. The
    offsets are found by serializing sentinel values, and checked once by deserializing.
    """

    SENTINEL_SEC, SENTINEL_NANOSEC = 0x5A5C3E1F, 987_654_321

    def __init__(self, msg, values_attr: str, size: int, stamped: bool) -> None:
        from rclpy.serialization import deserialize_message, serialize_message
        sentinel = 1234.5678901234 + np.arange(size, dtype=np.float64) * 1e-3
        setattr(msg, values_attr, sentinel.tolist())
        if stamped:
            msg.header.stamp.sec, msg.header.stamp.nanosec = self.SENTINEL_SEC, \
                self.SENTINEL_NANOSEC
        self._buffer = bytearray(serialize_message(msg))
        self._values = np.frombuffer(self._buffer, dtype="<f8", count=size,
                                     offset=_unique_offset(self._buffer, sentinel.astype("<f8")))
        self._stamp = np.frombuffer(self._buffer, dtype="<u4", count=2, offset=_unique_offset(
            self._buffer, np.array([self.SENTINEL_SEC, self.SENTINEL_NANOSEC], "<u4"))) \
            if stamped else None
        probe = np.linspace(-1.0, 1.0, size)
        data = self.fill(probe, 7, 11)
        back = deserialize_message(data, type(msg))
        if not np.array_equal(np.asarray(getattr(back, values_attr)), probe) or (
                stamped and (back.header.stamp.sec, back.header.stamp.nanosec) != (7, 11)):
            raise LookupError("patched message does not deserialize to the patched values")

    def fill(self, values: np.ndarray, sec: int = 0, nanosec: int = 0) -> bytes:
        self._values[:] = values
        if self._stamp is not None:
            self._stamp[0], self._stamp[1] = sec, nanosec
        return bytes(self._buffer)


def _unique_offset(buffer: bytearray, values: np.ndarray) -> int:
    pattern = values.tobytes()
    at = buffer.find(pattern)
    if at < 0 or buffer.find(pattern, at + 1) >= 0:
        raise LookupError("sentinel not found exactly once in the serialized message")
    return at
