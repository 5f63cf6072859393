"""The wire codec on its own: round trips, every limit, and the error code each violation gets."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from policy_steer.transport.codec import ALLOWED_DTYPES, DEFAULT_LIMITS, Limits, decode, encode, to_wire
from policy_steer.transport.errors import ProtocolError
from policy_steer.transport.messages import ALL_TYPES, SERVER_ACCEPTS


def header(msg_type: str = "ping", seq: int = 7, **keys):
    return {"v": 2, "type": msg_type, "seq": seq, "stamp": 1.5, "arrays": [], **keys}


def frames_of(h, *bufs):
    return [msgpack.packb(h), *bufs]


def code_of(frames, accept=SERVER_ACCEPTS, limits=DEFAULT_LIMITS):
    with pytest.raises(ProtocolError) as e:
        decode(frames, accept=accept, limits=limits)
    return e.value.code, e.value.re


@pytest.mark.parametrize("dtype", sorted(ALLOWED_DTYPES))
def test_every_allowed_dtype_round_trips(dtype):
    rng = np.random.default_rng(0)
    arr = (rng.random((3, 4)) * 100).astype(np.dtype(dtype)) if dtype != "|b1" else rng.random((3, 4)) > 0.5
    frames = encode(
        {"type": "observe", "seq": 1, "session": "s", "step": 0, "start_step": 0, "state_kind": "measured"}, {"x": arr}
    )
    msg = decode([bytes(f) for f in frames], accept=SERVER_ACCEPTS)
    assert msg.arrays["x"].dtype.str == dtype
    np.testing.assert_array_equal(msg.arrays["x"], arr)
    assert not msg.arrays["x"].flags.writeable  # a view on the received frame, not a copy


def test_big_endian_input_is_sent_little_endian():
    arr = np.arange(5, dtype=">f4")
    frames = encode({"type": "ping", "seq": 1}, {"x": arr})
    h = msgpack.unpackb(frames[0])
    assert h["arrays"][0]["dtype"] == "<f4" and h["v"] == 2 and isinstance(h["stamp"], float)
    np.testing.assert_array_equal(decode([bytes(f) for f in frames]).arrays["x"], arr)


def test_zero_size_and_max_dims_arrays():
    arrs = {"empty": np.zeros((0, 7), np.float32), "eight": np.zeros((1,) * 8, np.uint8)}
    msg = decode([bytes(f) for f in encode({"type": "ping", "seq": 1}, arrs)])
    assert msg.arrays["empty"].shape == (0, 7) and msg.arrays["eight"].ndim == 8


@pytest.mark.parametrize("dtype", ["|O", "<c8", "<U4", "|V4", ">f4", "f4", "float32", 5, None])
def test_disallowed_dtypes_are_bad_array(dtype):
    h = header(arrays=[{"name": "x", "dtype": dtype, "shape": [1]}])
    code, re = code_of(frames_of(h, b"\0" * 4))
    assert code in ("bad_array",) and re == 7


def test_frame_count_and_length_mismatches_are_bad_array():
    h = header(arrays=[{"name": "x", "dtype": "<f4", "shape": [2]}])
    assert code_of(frames_of(h)) == ("bad_array", 7)  # frame missing
    assert code_of(frames_of(h, b"\0" * 8, b"\0")) == ("bad_array", 7)  # one too many
    assert code_of(frames_of(h, b"\0" * 7)) == ("bad_array", 7)  # short
    assert code_of(frames_of(header(arrays=[{"name": "b", "dtype": "|b1", "shape": [2]}]), b"\x00\x02")) == (
        "bad_array",
        7,
    )
    dup = header(arrays=[{"name": "x", "dtype": "|u1", "shape": [1]}] * 2)
    assert code_of(frames_of(dup, b"a", b"b")) == ("bad_array", 7)
    assert code_of(frames_of(header(arrays=[{"name": "x", "dtype": "|u1", "shape": [-1]}]), b"")) == ("bad_array", 7)


def test_limits_are_checked_on_declared_sizes_before_any_frame():
    huge = header(arrays=[{"name": "x", "dtype": "<f8", "shape": [2**40, 2**40]}])
    assert code_of(frames_of(huge, b"")) == ("too_large", 7)
    over = header(arrays=[{"name": "x", "dtype": "|u1", "shape": [64 * 2**20 + 1]}])
    assert code_of(frames_of(over, b"")) == ("too_large", 7)
    many = header(arrays=[{"name": f"a{i}", "dtype": "|u1", "shape": [1]} for i in range(33)])
    assert code_of(frames_of(many, *[b"x"] * 33)) == ("too_large", 7)
    dims = header(arrays=[{"name": "x", "dtype": "|u1", "shape": [1] * 9}])
    assert code_of(frames_of(dims, b"x")) == ("too_large", 7)
    name = header(arrays=[{"name": "n" * 129, "dtype": "|u1", "shape": [1]}])
    assert code_of(frames_of(name, b"x")) == ("too_large", 7)
    assert code_of(frames_of(header(client="c" * 4097))) == ("too_large", 7)
    # a whole message over the limit, whatever it declares
    small = Limits(max_message_bytes=1000, max_header_bytes=1000)
    assert code_of(frames_of(header(), b"x" * 3000), limits=small)[0] == "too_large"
    assert code_of([b"\x80" * 2000], limits=small)[0] == "too_large"


def test_strings_at_the_limit_pass():
    h = header("hello", client="c" * 4096, control_hz=10.0)
    assert decode(frames_of(h), accept=SERVER_ACCEPTS).header["client"] == "c" * 4096
    name = header(arrays=[{"name": "n" * 128, "dtype": "|u1", "shape": [1]}])
    assert "n" * 128 in decode(frames_of(name, b"x")).arrays


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\xc1",
        b"\x91",
        msgpack.packb([1, 2]),
        msgpack.packb("text"),
        msgpack.packb({"v": 1}) + b"tail",
        b"\x81\x01\x02",
        b"\xff" * 50,
        b"\x91" * 100000,
    ],
)
def test_garbage_is_bad_header_without_re(frame):
    code, re = code_of([frame])
    assert code in ("bad_header", "too_large") and re is None


def test_version_and_type_and_keys():
    assert code_of(frames_of(header(v=3))) == ("version", 7)
    assert code_of(frames_of(header(v=1))) == ("version", 7)
    assert code_of(frames_of(header(v="2"))) == ("bad_header", 7)
    assert code_of(frames_of(header("launch_missiles"))) == ("unknown_type", 7)
    assert code_of(frames_of(header("welcome"))) == ("unknown_type", 7)  # a client-only type at the server
    assert code_of(frames_of(header(seq="x")))[0] == "bad_header"
    assert code_of(frames_of(header(seq=True)))[0] == "bad_header"
    assert code_of(frames_of(header(stamp="now"))) == ("bad_header", 7)
    assert code_of(frames_of(header(stamp=float("nan")))) == ("bad_header", 7)
    h = header()
    del h["arrays"]
    assert code_of(frames_of(h)) == ("bad_header", 7)
    assert code_of(frames_of(header("hello", control_hz=10.0))) == ("bad_header", 7)  # client missing
    assert code_of(frames_of(header("hello", client="c", control_hz=-1.0))) == ("bad_header", 7)
    assert code_of(frames_of(header("hello", client=3, control_hz=1.0))) == ("bad_header", 7)
    obs = dict(session="s", step=0, start_step=0, state_kind="guessed")
    assert code_of(frames_of(header("observe", **obs))) == ("bad_header", 7)
    assert code_of(frames_of({**header(), 1: 2}))[0] == "bad_header"
    assert code_of(frames_of(header(extra=b"bytes"))) == ("bad_header", 7)


def test_every_type_header_table_round_trips():
    examples = {
        "hello": dict(client="c", control_hz=10.0),
        "welcome": dict(re=1, session="s", policy={}, observation={}, action={}, server="x"),
        "observe": dict(session="s", step=1, start_step=2, state_kind="estimated", task="t"),
        "chunk": dict(re=1, session="s", start_step=2, info={"latency_ms": 1.0, "steer": {}}),
        "configure": dict(session="s", task="t", steer={"a": 1}),
        "configured": dict(re=1, session="s", steer={"a": 1}),
        "episode": dict(session="s", context={"instruction": "i", "seed": 3}),
        "episode_started": dict(re=1, session="s", episode=1, steer={"method": "vls"}, strategies=["vls"]),
        "context": dict(session="s", context={}),
        "executed": dict(session="s", step=4, chunk_start_step=2, index=2, safety=None),
        "ping": {},
        "pong": dict(re=3),
        "error": dict(re=3, code="busy", message="m"),
    }
    assert set(examples) == set(ALL_TYPES)
    for t, keys in examples.items():
        msg = decode([bytes(f) for f in encode({"type": t, "seq": 9, **keys})], accept=ALL_TYPES)
        assert msg.type == t and msg.seq == 9
        for k, v in keys.items():
            assert msg.header[k] == v


def test_to_wire_makes_info_msgpack_safe():
    info = {
        "a": np.float32(1.5),
        "b": np.arange(3),
        "c": float("inf"),
        "d": (1, 2),
        "e": object(),
        5: "k",
        "big": np.zeros(10000),
    }
    out = to_wire(info)
    msgpack.packb(out)
    assert out["a"] == 1.5 and out["b"] == [0, 1, 2] and out["c"] is None and out["d"] == [1, 2] and out["5"] == "k"
    assert out["big"]["truncated"] is True


def test_v2_header_keys_of_the_episode_messages():
    assert code_of(frames_of(header("episode", session="s"))) == ("bad_header", 7)  # context missing
    assert code_of(frames_of(header("episode", session="s", context=None))) == ("bad_header", 7)
    assert code_of(frames_of(header("context", session="s", context=[1]))) == ("bad_header", 7)
    ok = dict(session="s", step=3)
    decode(frames_of(header("executed", **ok)), accept=SERVER_ACCEPTS)  # a hold: both nil (absent)
    decode(frames_of(header("executed", **ok, chunk_start_step=None, index=None, safety=None)), accept=SERVER_ACCEPTS)
    for bad in (
        dict(chunk_start_step=2),  # a chunk row needs its index
        dict(index=0),
        dict(chunk_start_step=2, index=-1),
        dict(chunk_start_step=2.0, index=0),
        dict(safety=3),
        dict(step=True),
    ):
        assert code_of(frames_of(header("executed", **{**ok, **bad}))) == ("bad_header", 7), bad


def test_the_version_error_names_the_spec_and_why_v1_is_refused():
    with pytest.raises(ProtocolError) as e:
        decode(frames_of(header("hello", v=1, client="c", control_hz=1.0)), accept=SERVER_ACCEPTS)
    assert e.value.code == "version" and e.value.peer_version == 1 and e.value.re == 7
    assert "version 2" in e.value.message and "docs/protocol.md" in e.value.message
    assert "episode context" in e.value.message
    # a side that speaks another version (a separate control socket, say) says so with its own number
    msg = decode([bytes(f) for f in encode({"type": "ping", "seq": 1}, version=1)], version=1)
    assert msg.header["v"] == 1
    with pytest.raises(ProtocolError, match="speaks version 1"):
        decode(frames_of(header()), version=1)
