"""The message types of protocol v2 (``docs/protocol.md``) and the header keys each one carries.

A decoded message is a :class:`Message`: its msgpack header (a dict with string keys) and its arrays
by name, in frame order. :func:`check_header` checks the keys that a type adds to the common ones
(``v``, ``type``, ``seq``, ``stamp``, ``arrays``, checked by the codec) and raises
:class:`~policy_steer.transport.errors.ProtocolError` with code ``bad_header`` naming the key.

The episode context travels in a header as plain data (``context``): :func:`context_to_wire` makes
that data from an :class:`~policy_steer.types.EpisodeContext` on the sending side, and
:func:`context_from_wire` turns received data back into one, checked against the published schema
(``policy_steer/schema/episode_context.schema.json``) and for finite numbers, or raises ``bad_context``
naming the place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from policy_steer.errors import ValidationError
from policy_steer.transport.errors import BAD_CONTEXT, BAD_HEADER, ProtocolError
from policy_steer.types import EpisodeContext

PROTOCOL_VERSION = 2
SPEC_DOC = "docs/protocol.md"  # named in the `version` error a client of another version gets

HELLO = "hello"
WELCOME = "welcome"
OBSERVE = "observe"
CHUNK = "chunk"
CONFIGURE = "configure"
CONFIGURED = "configured"
EPISODE = "episode"
EPISODE_STARTED = "episode_started"
CONTEXT = "context"
EXECUTED = "executed"
PING = "ping"
PONG = "pong"
ERROR = "error"

# What each side may receive. ``ping``/``pong`` go both ways.
SERVER_ACCEPTS = frozenset({HELLO, OBSERVE, CONFIGURE, EPISODE, CONTEXT, EXECUTED, PING, PONG})
CLIENT_ACCEPTS = frozenset({WELCOME, CHUNK, CONFIGURED, EPISODE_STARTED, PING, PONG, ERROR})
ALL_TYPES = SERVER_ACCEPTS | CLIENT_ACCEPTS
# Client messages that get no answer unless they are refused or malformed.
NOTIFICATIONS = frozenset({CONTEXT, EXECUTED})

STATE_KINDS = ("measured", "estimated")
PREFIX = "prefix"  # the optional observe array of actions committed before start_step
ACTIONS = "actions"  # the chunk's array
# The arrays of ``executed``: what reached the robot, what the loop asked for, the measured state.
EXECUTED_ACTION = "action"
EXECUTED_COMMANDED = "commanded"
EXECUTED_STATE = "state"

_INT = (int,)
_NUM = (int, float)
_STR = (str,)
_MAP = (dict,)
_LIST = (list,)
_NONE = (type(None),)
_BOOL = (bool,)

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
        "limits": (_MAP, False),  # the operator's maxima (candidates, particles, num_steps, chunk_s, reward_backends)
    },
    OBSERVE: {
        "session": (_STR, True),
        "step": (_INT, True),
        "start_step": (_INT, True),
        "task": (_STR, False),
        "state_kind": (_STR, True),
        "prefix_start": (_INT, False),
        "prefix_committed": (_INT, False),
    },
    CHUNK: {"re": (_INT, True), "session": (_STR, True), "start_step": (_INT, True), "info": (_MAP, True)},
    CONFIGURE: {"session": (_STR, True), "task": (_STR, False), "steer": (_MAP, False)},
    CONFIGURED: {"re": (_INT, True), "session": (_STR, True), "steer": (_MAP, True)},
    EPISODE: {"session": (_STR, True), "context": (_MAP, True)},
    EPISODE_STARTED: {
        "re": (_INT, True),
        "session": (_STR, True),
        "episode": (_INT, True),
        "steer": (_MAP, True),
        "strategies": (_LIST, True),
        "wants_prefix": (_BOOL, False),
    },
    CONTEXT: {"session": (_STR, True), "context": (_MAP, True)},
    EXECUTED: {
        "session": (_STR, True),
        "step": (_INT, True),
        "chunk_start_step": (_INT + _NONE, False),
        "index": (_INT + _NONE, False),
        "safety": (_STR + _NONE, False),
    },
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


def _type_names(types: tuple[type, ...]) -> str:
    return " or ".join("nil" if t is type(None) else t.__name__ for t in types)


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
            raise ProtocolError(
                BAD_HEADER,
                f"{msg_type}: header key {key!r} must be {_type_names(types)}, got {type(value).__name__}",
                re,
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
    elif msg_type == EXECUTED:
        index = header.get("index")
        if index is not None and index < 0:
            raise ProtocolError(BAD_HEADER, f"executed: index must be >= 0 or nil, got {index}", re)
        if (header.get("chunk_start_step") is None) != (index is None):
            raise ProtocolError(
                BAD_HEADER, "executed: chunk_start_step and index are both ints (a chunk row) or both nil (a hold)", re
            )


# --- the episode context on the wire --------------------------------------------------------------


def _first_non_finite(value: Any, where: str) -> str | None:
    """The path of the first NaN or infinite number in plain data (None: every number is finite)."""
    if isinstance(value, float):
        return None if math.isfinite(value) else where
    if isinstance(value, dict):
        for k, v in value.items():
            bad = _first_non_finite(v, f"{where}/{k}" if where else str(k))
            if bad is not None:
                return bad
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            bad = _first_non_finite(v, f"{where}/{i}" if where else str(i))
            if bad is not None:
                return bad
    return None


def _plain(value: Any) -> Any:
    """numpy scalars and arrays -> Python numbers and lists (msgpack packs nothing else)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def context_to_wire(context: EpisodeContext) -> dict[str, Any]:
    """The ``context`` header value for ``context``, checked as the server will check it.

    Raises ValidationError naming the place when the context fails its schema or holds a non-finite
    number (nothing is sent then).
    """
    from policy_steer.schema import validate

    if not isinstance(context, EpisodeContext):
        raise ValidationError(f"the episode context must be an EpisodeContext, got {type(context).__name__}")
    data = _plain(context.to_dict())
    bad = _first_non_finite(data, "")
    if bad is not None:
        raise ValidationError(f"context holds a non-finite number at {bad}")
    validate(data, "context")
    return data


def context_from_wire(data: Any, msg_type: str, re: int | None) -> EpisodeContext:
    """Received ``context`` data -> EpisodeContext; ProtocolError(bad_context) naming the place."""
    bad = _first_non_finite(data, "")
    if bad is not None:
        raise ProtocolError(BAD_CONTEXT, f"{msg_type}: context holds a non-finite number at {bad}", re)
    try:
        return EpisodeContext.from_dict(data)
    except ValidationError as e:
        raise ProtocolError(BAD_CONTEXT, f"{msg_type}: {e}", re) from None
    except (TypeError, ValueError, KeyError) as e:  # schema-valid data the types still refuse
        raise ProtocolError(BAD_CONTEXT, f"{msg_type}: context refused: {type(e).__name__}: {e}", re) from None
