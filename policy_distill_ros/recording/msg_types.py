"""Message definitions and CDR decoding through rosbags' typestore (no ROS install needed).

The typestore knows the standard ROS 2 messages (Kilted definitions, which are the Humble/Jazzy
ones for every type this package uses). Deserialized messages carry the same attribute names as
rclpy messages, so `core/fields.py` reads both.
"""
from __future__ import annotations

import functools
from collections.abc import Iterable

from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

# MessageTypeError (malformed or unknown to the typestore) is the contract's, re-exported here.
from policy_distill_ros.core.contract import MessageTypeError, normalize_type_name


@functools.cache
def default_typestore() -> Typestore:
    """A fresh typestore with the standard ROS 2 messages (cached: building one takes ~50 ms)."""
    return get_typestore(Stores.ROS2_KILTED)


def message_definition(msgtype: str, typestore: Typestore | None = None) -> tuple[str, str]:
    """(ros2msg definition text with dependencies, RIHS01 type hash) for a message type."""
    store = typestore or default_typestore()
    msgtype = normalize_type_name(msgtype)
    if msgtype not in store.fielddefs:
        raise MessageTypeError(f"message type {msgtype!r} is not in the typestore; known "
                               f"packages: {sorted({t.split('/')[0] for t in store.fielddefs})}")
    text, _ = store.generate_msgdef(msgtype, ros_version=2)
    return text, store.hash_rihs01(msgtype)


def register_schemas(store: Typestore, schemas: Iterable[tuple[str, str, bytes]]) -> None:
    """Teach `store` the types a bag brings along that it does not know yet (custom messages).

    `schemas` are (type name, encoding, definition) as stored in the MCAP schema records.
    """
    for name, encoding, data in schemas:
        try:
            msgtype = normalize_type_name(name)
        except MessageTypeError:
            continue
        if msgtype in store.fielddefs or encoding != "ros2msg" or not data:
            continue
        types = get_types_from_msg(data.decode("utf-8"), msgtype)
        store.register({k: v for k, v in types.items() if k not in store.fielddefs})


# rclpy/Fast CDR 2 (Kilted wheels) reserve alignment for empty float64 sequences, so a
# JointState with empty velocity and effort arrives with 8 bytes after its last field. rosbags'
# `deserialize_cdr` rejects more than 3 trailing bytes; decoding goes one level down and accepts
# trailing bytes (the type comes from the bag's own schema, and a wrong type fails while decoding).


def decode_cdr(store: Typestore, data: bytes, msgtype: str) -> object:
    """Deserialize one CDR message exactly as received from DDS (ValueError when it is not)."""
    if len(data) < 4 or bytes(data[:2]) not in (b"\x00\x00", b"\x00\x01"):
        raise ValueError("not a CDR message (unknown encapsulation header)")
    msgdef = store.get_msgdef(msgtype)
    func = msgdef.deserialize_cdr_le if data[1] else msgdef.deserialize_cdr_be
    message, pos = func(memoryview(data)[4:], 0, msgdef.cls, store)
    if pos + 4 > len(data):
        raise ValueError(f"message needs {pos + 4} bytes, has {len(data)}")
    return message
