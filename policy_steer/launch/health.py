"""Readiness probes of ``policy-steer launch``: a protocol ``ping`` and a telemetry message.

(The ``line`` check reads the process's output and lives with the process; ``none`` needs no probe.)
Each probe tries until it succeeds, ``deadline`` passes or ``cancelled()`` turns true, and returns
``(ok, what happened)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import zmq

from policy_steer.transport.codec import encode
from policy_steer.transport.telemetry import TelemetrySubscriber


def ping(endpoint: str, deadline: float, cancelled: Callable[[], bool], every_s: float = 0.5) -> tuple[bool, str]:
    """Send a protocol v2 (docs/protocol.md) ``ping`` to a server's ROUTER until a ``pong`` answers it."""
    import msgpack

    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.IMMEDIATE, 1)  # nothing queued for a server that is not there yet
    sock.connect(endpoint)
    seq, last = 0, 0.0
    try:
        while not cancelled():
            now = time.monotonic()
            if now > deadline:
                return False, f"no pong from {endpoint}"
            if now - last >= every_s:
                seq += 1
                try:
                    sock.send_multipart(encode({"type": "ping", "seq": seq}), zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    pass  # not connected yet
                last = now
            if sock.poll(100):
                frames = sock.recv_multipart()
                try:
                    header = msgpack.unpackb(frames[0], raw=False)
                except Exception:  # noqa: BLE001 - not a protocol server; keep trying until the deadline
                    continue
                if isinstance(header, dict) and header.get("type") == "pong":
                    return True, f"pong from {endpoint}"
        return False, "cancelled"
    finally:
        sock.close(linger=0)
        ctx.term()


def telemetry(endpoint: str, topics: list[str], deadline: float, cancelled: Callable[[], bool]) -> tuple[bool, str]:
    """Wait for one message on a telemetry PUB endpoint (any topic, or one of ``topics``)."""
    ctx = zmq.Context()
    sub = TelemetrySubscriber(endpoint, topics=tuple(topics) or ("",), context=ctx)
    try:
        while not cancelled():
            if time.monotonic() > deadline:
                return False, f"no telemetry on {endpoint}" + (f" (topics {topics})" if topics else "")
            try:
                msg = sub.recv(0.1)
            except Exception as e:  # noqa: BLE001 - a malformed message still proves a publisher is up
                return True, f"telemetry on {endpoint} ({type(e).__name__})"
            if msg is not None:
                return True, f"'{msg.topic}' on {endpoint}"
        return False, "cancelled"
    finally:
        sub.close()
        ctx.term()
