"""Sensor messages straight from their serialized (CDR) bytes, without ROS message objects.

rclpy turns each received message into Python objects (a JointState of 12 joints: a list of 12
strings, three arrays, a header; an Imu: nested objects and three 9-element covariance arrays),
measured at 50-65 us per message in a hot loop and about twice that in a real multi-process run.
A policy node reads a handful of numbers from each; decoding them from the bytes costs a few
struct reads and numpy views. The decoded objects duck-type the message fields the observation
code reads (`core.fields.extract`: `header.stamp.sec/nanosec`, `name`, `position`,
`orientation` as [x, y, z, w], ...), so the assembler cannot tell them from rclpy messages.

Only plain little-endian CDR (XCDR1, encapsulation 0x0001, what Fast DDS and Cyclone send for
these types) is decoded here; anything else raises `CdrError` and the caller falls back to
rclpy's deserializer. Arrays are read-only views into the message bytes.
"""
from __future__ import annotations

import struct
from collections.abc import Callable

import numpy as np

from .contract import IMU_TYPE, JOINT_STATE_TYPE

__all__ = ["CdrError", "Stamp", "Header", "DecodedJointState", "DecodedImu", "JointStateDecoder",
           "decode_imu", "DECODERS"]

_CDR_LE = b"\x00\x01"
_U32 = struct.Struct("<I")
_HEAD = struct.Struct("<2s2xiII")  # encapsulation, options, stamp sec + nanosec, frame_id length
_F8 = np.dtype("<f8")


class CdrError(ValueError):
    """The bytes are not a plain little-endian CDR message of the expected type."""


class Stamp:
    """builtin_interfaces/Time: `sec`, `nanosec`."""

    __slots__ = ("sec", "nanosec")

    def __init__(self, sec: int, nanosec: int) -> None:
        self.sec, self.nanosec = sec, nanosec


class Header:
    """std_msgs/Header: `stamp`, `frame_id`."""

    __slots__ = ("stamp", "frame_id")

    def __init__(self, stamp: Stamp, frame_id: str) -> None:
        self.stamp, self.frame_id = stamp, frame_id


class _FlatFields:
    """A decoded message's field `k` of `FLAT_FIELDS` as a view of `payload`, by `flat_layout`."""

    __slots__ = ()
    payload: np.ndarray
    flat_layout: tuple

    def _field(self, k: int) -> np.ndarray:
        start, count = self.flat_layout[2 * k], self.flat_layout[2 * k + 1]
        return self.payload[start:start + count]


class DecodedJointState(_FlatFields):
    """sensor_msgs/JointState fields: header, name (list), position/velocity/effort (arrays).

    Flat form, for a reader that gathers several fields in one `take`: `payload`, every double
    of the message (a float64 view of the bytes after the 4-byte encapsulation header), and
    `flat_layout`, (start, count) in `payload` of each of `FLAT_FIELDS`, flattened. The field
    arrays are views of it made when read: the flat reader never pays for them."""

    __slots__ = ("header", "name", "payload", "flat_layout")
    FLAT_FIELDS = ("position", "velocity", "effort")

    def __init__(self, header, name, payload: np.ndarray, flat_layout: tuple) -> None:
        self.header, self.name = header, name
        self.payload, self.flat_layout = payload, flat_layout

    position = property(lambda self: self._field(0))
    velocity = property(lambda self: self._field(1))
    effort = property(lambda self: self._field(2))


class DecodedImu(_FlatFields):
    """sensor_msgs/Imu fields; orientation is [x, y, z, w], vectors [x, y, z]. Flat form as
    for DecodedJointState: the 37 doubles start at `start` in `payload`."""

    __slots__ = ("header", "payload", "flat_layout")
    FLAT_FIELDS = ("orientation", "orientation_covariance", "angular_velocity",
                   "angular_velocity_covariance", "linear_acceleration",
                   "linear_acceleration_covariance")
    _SPANS = ((0, 4), (4, 9), (13, 3), (16, 9), (25, 3), (28, 9))  # within the 37 doubles

    def __init__(self, header, payload: np.ndarray, start: int = 0) -> None:
        self.header, self.payload = header, payload
        self.flat_layout = _imu_layout(start)

    orientation = property(lambda self: self._field(0))
    orientation_covariance = property(lambda self: self._field(1))
    angular_velocity = property(lambda self: self._field(2))
    angular_velocity_covariance = property(lambda self: self._field(3))
    linear_acceleration = property(lambda self: self._field(4))
    linear_acceleration_covariance = property(lambda self: self._field(5))


_IMU_LAYOUTS: dict[int, tuple] = {}


def _imu_layout(start: int) -> tuple:
    """The Imu's flat layout when its 37 doubles start at `start` (the same for every message
    with the same frame_id length): built once per start."""
    layout = _IMU_LAYOUTS.get(start)
    if layout is None:
        layout = _IMU_LAYOUTS[start] = tuple(
            x for offset, count in DecodedImu._SPANS for x in (start + offset, count))
    return layout


def _payload(data: bytes) -> np.ndarray:
    """Every 8-byte slot after the encapsulation header as float64: XCDR1 aligns doubles to 8
    relative to the payload, so a double at byte offset o is element (o - 4) // 8."""
    return np.frombuffer(data, _F8, (len(data) - 4) >> 3, 4)


def _align(pos: int, n: int) -> int:
    """XCDR1 alignment, relative to the payload after the 4-byte encapsulation header."""
    return pos + (-(pos - 4) % n)


def _header(data: bytes) -> tuple[Header, int]:
    if len(data) < 16:
        raise CdrError(f"not plain little-endian CDR (encapsulation {data[0:2].hex() or '-'})")
    encapsulation, sec, nanosec, length = _HEAD.unpack_from(data)
    if encapsulation != _CDR_LE:
        raise CdrError(f"not plain little-endian CDR (encapsulation {data[0:2].hex()})")
    end = 16 + length
    if length == 0 or end > len(data) or data[end - 1] != 0:
        raise CdrError("bad header.frame_id string")
    return Header(Stamp(sec, nanosec), data[16:end - 1].decode()), end


def _doubles(data: bytes, pos: int) -> tuple[int, int, int]:
    """A sequence<double>: count, then the values (8-aligned). Returns (start in the payload
    view, count, end byte)."""
    pos += -pos & 3  # _align(pos, 4), inlined
    if pos + 4 > len(data):
        raise CdrError("truncated sequence length")
    (count,) = _U32.unpack_from(data, pos)
    if not count:
        return 0, 0, pos + 4
    pos += 4 + (-pos & 7)  # _align(pos + 4, 8), inlined
    end = pos + 8 * count
    if end > len(data):
        raise CdrError(f"sequence of {count} doubles runs past the end ({len(data)} bytes)")
    return (pos - 4) >> 3, count, end


class JointStateDecoder:
    """Decodes sensor_msgs/JointState; the joint-name block is decoded once per distinct bytes
    (robots send the same names every time), so a message costs a bytes comparison there."""

    _MAX_CACHED = 8

    def __init__(self) -> None:
        self._names: dict[bytes, tuple[list[str], int]] = {}

    def __call__(self, data: bytes) -> DecodedJointState:
        header, pos = _header(data)
        pos = _align(pos, 4)
        if pos + 4 > len(data):
            raise CdrError("truncated name sequence")
        (count,) = _U32.unpack_from(data, pos)
        start = pos
        names, end = self._names_at(data, start, count)
        p, n_p, pos = _doubles(data, end)
        v, n_v, pos = _doubles(data, pos)
        e, n_e, pos = _doubles(data, pos)
        return DecodedJointState(header, names, _payload(data), (p, n_p, v, n_v, e, n_e))

    def _names_at(self, data: bytes, start: int, count: int) -> tuple[list[str], int]:
        # the block's length is unknown until parsed: look it up by the bytes it would span
        for block, (names, size) in self._names.items():
            if len(names) == count and data[start:start + size] == block:
                return names, start + size
        names, pos = [], start + 4
        for _ in range(count):
            pos = _align(pos, 4)
            if pos + 4 > len(data):
                raise CdrError("truncated joint name")
            (length,) = _U32.unpack_from(data, pos)
            end = pos + 4 + length
            if length == 0 or end > len(data) or data[end - 1] != 0:
                raise CdrError("bad joint name string")
            names.append(data[pos + 4:end - 1].decode())
            pos = end
        if len(self._names) >= self._MAX_CACHED:
            self._names.clear()
        self._names[bytes(data[start:pos])] = (names, pos - start)
        return names, pos


def decode_imu(data: bytes) -> DecodedImu:
    """Decodes sensor_msgs/Imu (37 doubles after the header: orientation, covariance, ...)."""
    header, pos = _header(data)
    pos = _align(pos, 8)
    if pos + 37 * 8 > len(data):
        raise CdrError(f"Imu needs {pos + 37 * 8} bytes, got {len(data)}")
    return DecodedImu(header, _payload(data), (pos - 4) >> 3)


def _new_joint_state_decoder() -> Callable[[bytes], DecodedJointState]:
    return JointStateDecoder()


def _imu_decoder() -> Callable[[bytes], DecodedImu]:
    return decode_imu


# message type name -> factory of a decoder (one per subscription: decoders may cache)
DECODERS: dict[str, Callable[[], Callable[[bytes], object] | None]] = {
    JOINT_STATE_TYPE: _new_joint_state_decoder,
    IMU_TYPE: _imu_decoder,
}
