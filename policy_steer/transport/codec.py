"""The wire format of docs/protocol.md: frame 0 a msgpack header, frames 1..n one raw little-endian array each.

Decoding never unpickles, evals or imports anything. Every limit is checked on sizes the header
*declares* before an array is touched, and arrays are read-only ``np.frombuffer`` views on the
received frames (nothing is copied or allocated per array). Every failure is a
:class:`~policy_steer.transport.errors.ProtocolError` with the protocol's code and a message that
names the key or array at fault; ``re`` is set as soon as the header's ``seq`` could be read.

``version`` (default :data:`~policy_steer.transport.messages.PROTOCOL_VERSION`) is the ``v`` a side
writes and accepts; a message of another version is a ``version`` error that names the spec.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

from policy_steer.transport.errors import (
    BAD_ARRAY,
    BAD_HEADER,
    TOO_LARGE,
    UNKNOWN_TYPE,
    VERSION,
    ProtocolError,
)
from policy_steer.transport.messages import (
    HEADER_KEYS,
    PROTOCOL_VERSION,
    SPEC_DOC,
    Message,
    check_header,
    is_int,
)

# docs/protocol.md: nothing else (no object, string, void or complex types).
ALLOWED_DTYPES = frozenset({"|b1", "|u1", "|i1", "<u2", "<i2", "<i4", "<i8", "<f2", "<f4", "<f8"})
FLOAT_DTYPES = frozenset({"<f2", "<f4", "<f8"})
_INT64 = (-(2**63), 2**63 - 1)
_PEEK_BYTES = 64 * 1024  # how far into a rejected header peek_seq looks for its seq


@dataclass(frozen=True)
class Limits:
    """The protocol's limits (the first five) plus bounds on the header frame itself."""

    max_message_bytes: int = 64 * 2**20
    max_arrays: int = 32
    max_dims: int = 8
    max_name_chars: int = 128
    max_string_chars: int = 4096
    # Not in the v1 spec (named in v2's): the header is small metadata; these bound what msgpack may build from it.
    max_header_bytes: int = 256 * 1024
    max_container_items: int = 1024
    max_depth: int = 16


DEFAULT_LIMITS = Limits()


def _frame_len(frame: Any) -> int:
    return frame.nbytes if isinstance(frame, memoryview) else len(frame)


def _buffer(frame: Any) -> Any:
    """bytes, memoryview or a pyzmq Frame (received with copy=False) -> something np.frombuffer reads."""
    buf = getattr(frame, "buffer", None)
    return frame if buf is None else buf


def _check_strings(value: Any, limits: Limits, where: str, re: int | None, depth: int = 0) -> None:
    """Every string at most max_string_chars characters, every map key a string, nesting bounded."""
    if depth > limits.max_depth:
        raise ProtocolError(TOO_LARGE, f"header nests deeper than {limits.max_depth} levels at {where}", re)
    if isinstance(value, str):
        if len(value) > limits.max_string_chars:
            raise ProtocolError(
                TOO_LARGE, f"string at {where} has {len(value)} characters (limit {limits.max_string_chars})", re
            )
    elif isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise ProtocolError(BAD_HEADER, f"map key {k!r} at {where} is not a string", re)
            _check_strings(k, limits, where, re, depth + 1)
            _check_strings(v, limits, f"{where}.{k}", re, depth + 1)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_strings(v, limits, f"{where}[{i}]", re, depth + 1)
    elif isinstance(value, bytes):
        raise ProtocolError(BAD_HEADER, f"binary value at {where}: the header holds no raw bytes", re)


def peek_seq(frame: Any) -> int | None:
    """The header's ``seq`` read without building the header: for a header that breaks a limit or is
    damaged after its ``seq``, so that its error still carries ``re``. Every other value is skipped
    (msgpack's skip allocates nothing); None when no valid ``seq`` can be read."""
    try:
        head = memoryview(_buffer(frame))[:_PEEK_BYTES]  # no copy of a large frame: its first bytes only
        unpacker = msgpack.Unpacker(
            raw=False, max_buffer_size=_PEEK_BYTES, max_str_len=256, max_bin_len=0,
            max_array_len=0, max_map_len=0, max_ext_len=0,
        )
        unpacker.feed(head)
        for _ in range(min(unpacker.read_map_header(), 64)):  # seq is among the first keys of any sane header
            key = unpacker.unpack()
            if key == "seq":
                seq = unpacker.unpack()
                return seq if is_int(seq) and _INT64[0] <= seq <= _INT64[1] else None
            unpacker.skip()
    except Exception:  # not a map, truncated before the seq, a bad key: unreadable
        return None
    return None


def _unpack_header(frame: Any, limits: Limits) -> dict[str, Any]:
    size = _frame_len(frame)
    if size > limits.max_header_bytes:
        raise ProtocolError(
            TOO_LARGE, f"header frame is {size} bytes (limit {limits.max_header_bytes})", peek_seq(frame)
        )
    try:
        header = msgpack.unpackb(
            _buffer(frame),
            raw=False,
            strict_map_key=True,
            use_list=True,
            # msgpack's own bounds stop a header that declares huge containers before it builds them.
            max_str_len=4 * limits.max_string_chars,  # bytes; the character limit is checked below
            max_bin_len=limits.max_string_chars,
            max_array_len=limits.max_container_items,
            max_map_len=limits.max_container_items,
            max_ext_len=0,
        )
    except ValueError as e:
        if "exceeds max" in str(e):
            raise ProtocolError(TOO_LARGE, f"header: {e}", peek_seq(frame)) from None
        raise ProtocolError(
            BAD_HEADER, f"header frame is not msgpack: {type(e).__name__}: {e}", peek_seq(frame)
        ) from None
    except Exception as e:  # ExtraData, StackError, UnicodeDecodeError, FormatError, ...
        raise ProtocolError(
            BAD_HEADER, f"header frame is not msgpack: {type(e).__name__}: {e}", peek_seq(frame)
        ) from None
    if not isinstance(header, dict):
        raise ProtocolError(BAD_HEADER, f"header must be a msgpack map, got {type(header).__name__}")
    return header


def _array_specs(header: dict[str, Any], limits: Limits, re: int | None) -> list[tuple[str, str, tuple[int, ...], int]]:
    """The header's ``arrays`` entries, checked: [(name, dtype, shape, nbytes)]."""
    entries = header["arrays"]
    if len(entries) > limits.max_arrays:
        raise ProtocolError(TOO_LARGE, f"header declares {len(entries)} arrays (limit {limits.max_arrays})", re)
    specs = []
    names: set[str] = set()
    total = 0
    for i, entry in enumerate(entries):
        where = f"arrays[{i}]"
        if not isinstance(entry, dict):
            raise ProtocolError(BAD_HEADER, f"{where} must be a map with name, dtype, shape", re)
        name, dtype, shape = entry.get("name"), entry.get("dtype"), entry.get("shape")
        if not isinstance(name, str) or not name:
            raise ProtocolError(BAD_HEADER, f"{where}.name must be a non-empty string", re)
        if len(name) > limits.max_name_chars:
            raise ProtocolError(
                TOO_LARGE, f"{where}.name has {len(name)} characters (limit {limits.max_name_chars})", re
            )
        where = f"array {name!r}"
        if name in names:
            raise ProtocolError(BAD_ARRAY, f"{where} is declared twice", re)
        names.add(name)
        if not isinstance(dtype, str) or dtype not in ALLOWED_DTYPES:
            raise ProtocolError(
                BAD_ARRAY, f"{where}: dtype {dtype!r} is not allowed (use one of {sorted(ALLOWED_DTYPES)})", re
            )
        if not isinstance(shape, list):
            raise ProtocolError(BAD_ARRAY, f"{where}: shape must be a list of ints, got {type(shape).__name__}", re)
        if len(shape) > limits.max_dims:
            raise ProtocolError(TOO_LARGE, f"{where} has {len(shape)} dimensions (limit {limits.max_dims})", re)
        if not all(is_int(d) and d >= 0 for d in shape):
            raise ProtocolError(BAD_ARRAY, f"{where}: shape {shape!r} must hold non-negative ints", re)
        # Python ints do not overflow: a declared 2**62 x 2**62 is caught here, before any allocation.
        nbytes = math.prod(shape) * int(dtype[-1])
        total += nbytes
        if total > limits.max_message_bytes:
            raise ProtocolError(
                TOO_LARGE, f"{where}: declared arrays reach {total} bytes (limit {limits.max_message_bytes})", re
            )
        # A zero-size array may declare any other dimension (0 bytes either way), but numpy cannot even
        # describe [2**63-1, 0]: each array's non-zero dimensions must fit the message limit too.
        if nbytes == 0 and math.prod(max(d, 1) for d in shape) > limits.max_message_bytes:
            raise ProtocolError(
                BAD_ARRAY,
                f"{where}: shape {shape!r} holds no element, but its other dimensions reach "
                f"{math.prod(max(d, 1) for d in shape)} (limit {limits.max_message_bytes})",
                re,
            )
        specs.append((name, dtype, tuple(shape), nbytes))
    return specs


def version_message(got: int, speaks: int) -> str:
    """The ``version`` error's message: what arrived, what this side speaks, where the spec is."""
    text = f"protocol version {got} is not supported: this side speaks version {speaks} (spec: {SPEC_DOC})"
    if speaks == PROTOCOL_VERSION and got == 1:
        text += (
            "; version 1 clients are refused because they cannot send the episode context that steering"
            " needs (a v1 robot would get unsteered chunks without being told): upgrade the client to version 2"
        )
    return text


def decode(
    frames: Sequence[Any],
    accept: Iterable[str] | None = None,
    limits: Limits = DEFAULT_LIMITS,
    type_keys: bool = True,
    version: int = PROTOCOL_VERSION,
) -> Message:
    """Frames (bytes, memoryviews or pyzmq Frames, identity frame already removed) -> Message.

    ``accept``: the types this side takes (others get ``unknown_type``); ``None`` accepts any string
    type. With ``type_keys`` known types have their own header keys checked as well (telemetry
    headers reuse type names with other keys, so its subscriber turns this off). ``version``: the
    only ``v`` accepted (another is a ``version`` error carrying the peer's version).
    """
    if not frames:
        raise ProtocolError(BAD_HEADER, "empty message: no header frame")
    total = sum(_frame_len(f) for f in frames)
    if total > limits.max_message_bytes + limits.max_header_bytes:
        raise ProtocolError(
            TOO_LARGE, f"message is {total} bytes (limit {limits.max_message_bytes})", peek_seq(frames[0])
        )
    header = _unpack_header(frames[0], limits)
    seq = header.get("seq")
    re = seq if is_int(seq) and _INT64[0] <= seq <= _INT64[1] else None
    _check_strings(header, limits, "header", re)
    # The version first: a client of another version is told so, not that its keys look wrong.
    if "v" not in header:
        raise ProtocolError(BAD_HEADER, "header key 'v' (protocol version) is missing", re)
    if not is_int(header["v"]):
        raise ProtocolError(BAD_HEADER, f"header key 'v' must be int, got {type(header['v']).__name__}", re)
    if header["v"] != version:
        raise ProtocolError(VERSION, version_message(header["v"], version), re, peer_version=header["v"])
    msg_type = header.get("type")
    if not isinstance(msg_type, str):
        raise ProtocolError(BAD_HEADER, "header key 'type' must be a string", re)
    if accept is not None and msg_type not in accept:
        raise ProtocolError(UNKNOWN_TYPE, f"message type {msg_type!r} is not one of {sorted(accept)}", re)
    if re is None:
        raise ProtocolError(BAD_HEADER, f"header key 'seq' must be a 64-bit int, got {seq!r}")
    stamp = header.get("stamp")
    if not (isinstance(stamp, (int, float)) and not isinstance(stamp, bool) and math.isfinite(stamp)):
        raise ProtocolError(BAD_HEADER, f"header key 'stamp' must be a finite number, got {stamp!r}", re)
    if not isinstance(header.get("arrays"), list):
        raise ProtocolError(BAD_HEADER, "header key 'arrays' must be a list (empty when there are none)", re)
    specs = _array_specs(header, limits, re)
    if len(frames) - 1 != len(specs):
        raise ProtocolError(BAD_ARRAY, f"header declares {len(specs)} arrays but {len(frames) - 1} frames follow", re)
    if type_keys and msg_type in HEADER_KEYS:
        check_header(header)
    arrays: dict[str, np.ndarray] = {}
    for (name, dtype, shape, nbytes), frame in zip(specs, frames[1:]):
        got = _frame_len(frame)
        if got != nbytes:
            raise ProtocolError(
                BAD_ARRAY, f"array {name!r}: frame has {got} bytes, {dtype} {list(shape)} needs {nbytes}", re
            )
        try:
            arr = np.frombuffer(_buffer(frame), dtype=np.dtype(dtype)).reshape(shape)
        except ValueError as e:  # numpy cannot describe it (checked above; never an internal error)
            raise ProtocolError(BAD_ARRAY, f"array {name!r}: {dtype} {list(shape)}: {e}", re) from None
        if dtype == "|b1" and arr.size and arr.view(np.uint8).max() > 1:
            raise ProtocolError(BAD_ARRAY, f"array {name!r}: |b1 bytes must be 0 or 1", re)
        arrays[name] = arr
    return Message(header=header, arrays=arrays)


def wire_array(arr: Any) -> np.ndarray:
    """A C-contiguous little-endian array with an allowed dtype (the form sent on the wire)."""
    arr = np.asarray(arr)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    arr = np.ascontiguousarray(arr)
    if arr.dtype.str not in ALLOWED_DTYPES:
        raise ValueError(f"dtype {arr.dtype} ({arr.dtype.str}) cannot be sent; allowed: {sorted(ALLOWED_DTYPES)}")
    return arr


def encode(
    header: Mapping[str, Any], arrays: Mapping[str, Any] | None = None, version: int = PROTOCOL_VERSION
) -> list[Any]:
    """header fields (``type``, ``seq`` and the type's keys) + arrays -> frames for ``send_multipart``.

    ``v`` (``version``) and ``arrays`` are filled in, ``stamp`` too unless given. Array frames are
    memoryviews on the arrays (no copy): send them with ``copy=False`` and do not write into the
    arrays meanwhile.
    """
    arrs = [(name, wire_array(a)) for name, a in (arrays or {}).items()]
    full = dict(header)
    full["v"] = int(version)
    full.setdefault("stamp", time.monotonic())
    full["arrays"] = [{"name": n, "dtype": a.dtype.str, "shape": list(a.shape)} for n, a in arrs]
    frames: list[Any] = [msgpack.packb(full, use_bin_type=True)]
    frames += [memoryview(a).cast("B") if a.size else b"" for _, a in arrs]
    return frames


def to_wire(value: Any, depth: int = 0, max_items: int = 256) -> Any:
    """A msgpack-safe copy of ``value`` (chunk info, telemetry): numpy and torch scalars and small arrays
    become numbers and lists, non-finite floats become None, other objects their ``str``, all bounded."""
    if depth > 8:
        return str(value)[:200]
    if value is None or isinstance(value, (bool, int, str)):
        if isinstance(value, int) and not isinstance(value, bool) and not (_INT64[0] <= value <= _INT64[1]):
            return float(value)
        return value[:4096] if isinstance(value, str) else value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, np.generic):
        return to_wire(value.item(), depth + 1)
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor, without importing torch
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        if value.size > max_items:
            return {"shape": list(value.shape), "dtype": value.dtype.str, "truncated": True}
        return to_wire(value.tolist(), depth + 1)
    if isinstance(value, Mapping):
        return {str(k)[:128]: to_wire(v, depth + 1) for k, v in list(value.items())[:max_items]}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_wire(v, depth + 1) for v in list(value)[:max_items]]
    return str(value)[:200]
