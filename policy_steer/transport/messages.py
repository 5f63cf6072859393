"""The message types of PROTOCOL.md v1 and the header keys each one carries.

A decoded message is a :class:`Message`: its msgpack header (a dict with string keys) and its arrays
by name, in frame order. :func:`check_header` checks the keys that a type adds to the common ones
(``v``, ``type``, ``seq``, ``stamp``, ``arrays``, checked by the codec) and raises
:class:`~policy_steer.transport.errors.ProtocolError` with code ``bad_header`` naming the key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from policy_steer.transport.errors import BAD_HEADER, ProtocolError

PROTOCOL_VERSION = 1

HELLO = "hello"
WELCOME = "welcome"
OBSERVE = "observe"
CHUNK = "chunk"
CONFIGURE = "configure"
CONFIGURED = "configured"
PING = "ping"
PONG = "pong"
ERROR = "error"

# What each side may receive. ``ping``/``pong`` go both ways.
SERVER_ACCEPTS = frozenset({HELLO, OBSERVE, CONFIGURE, PING, PONG})
CLIENT_ACCEPTS = frozenset({WELCOME, CHUNK, CONFIGURED, PING, PONG, ERROR})
ALL_TYPES = SERVER_ACCEPTS | CLIENT_ACCEPTS

STATE_KINDS = ("measured", "estimated")
PREFIX = "prefix"  # the optional observe array of actions committed before start_step
ACTIONS = "actions"  # the chunk's array

_INT = (int,)
_NUM = (int, float)
_STR = (str,)
_MAP = (dict,)

# type -> {key: (accepted Python types after msgpack decoding, required)}
HEADER_KEYS: dict[str, dict[str, tuple[tuple[type, ...], bool]]] = {
    HELLO: {"client": (_STR, True), "control_hz": (_NUM, True)},
    WELCOME: {
        "re": (_INT, True),
        "session": (_STR, True),
        "policy": (_MAP, True),
        "observation": (_MAP, True),
        "action": (_MAP, True),
        "server": (_STR, True),
    },
    OBSERVE: {
        "session": (_STR, True),
        "step": (_INT, True),
        "start_step": (_INT, True),
        "task": (_STR, False),
        "state_kind": (_STR, True),
    },
    CHUNK: {"re": (_INT, True), "session": (_STR, True), "start_step": (_INT, True), "info": (_MAP, True)},
    CONFIGURE: {"session": (_STR, True), "task": (_STR, False), "steer": (_MAP, False)},
    CONFIGURED: {"re": (_INT, True), "session": (_STR, True), "steer": (_MAP, True)},
    PING: {},
    PONG: {"re": (_INT, True)},
    ERROR: {"re": (_INT, False), "code": (_STR, True), "message": (_STR, True)},
}


@dataclass
class Message:
    """A decoded message: the header and the arrays (read-only views on the received frames)."""

    header: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def type(self) -> str:
        return self.header["type"]

    @property
    def seq(self) -> int:
        return self.header["seq"]

    def get(self, key: str, default: Any = None) -> Any:
        return self.header.get(key, default)


def is_int(value: Any) -> bool:
    """msgpack ints only: bool is an int subclass in Python but a different msgpack type."""
    return isinstance(value, int) and not isinstance(value, bool)


def _type_ok(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool):
        return bool in types
    return isinstance(value, types)


def check_header(header: dict[str, Any]) -> None:
    """Check the keys that ``header["type"]`` adds; raise ProtocolError(bad_header) naming the first bad one."""
    msg_type = header["type"]
    re = header.get("seq")
    for key, (types, required) in HEADER_KEYS[msg_type].items():
        if key not in header:
            if required:
                raise ProtocolError(BAD_HEADER, f"{msg_type}: header key {key!r} is missing", re)
            continue
        value = header[key]
        if not _type_ok(value, types):
            want = " or ".join(t.__name__ for t in types)
            raise ProtocolError(
                BAD_HEADER, f"{msg_type}: header key {key!r} must be {want}, got {type(value).__name__}", re
            )
    if msg_type == HELLO:
        hz = header["control_hz"]
        if not (math.isfinite(hz) and hz > 0):
            raise ProtocolError(BAD_HEADER, f"hello: control_hz must be a positive finite number, got {hz!r}", re)
    elif msg_type == OBSERVE:
        if header["state_kind"] not in STATE_KINDS:
            raise ProtocolError(
                BAD_HEADER, f"observe: state_kind must be one of {STATE_KINDS}, got {header['state_kind']!r}", re
            )
    elif msg_type == CONFIGURE:
        steer = header.get("steer")
        if steer is not None and not all(isinstance(k, str) for k in steer):
            raise ProtocolError(BAD_HEADER, "configure: the keys of 'steer' must be strings", re)
