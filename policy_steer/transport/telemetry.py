"""Telemetry over PUB/SUB (docs/protocol.md, "Telemetry").

A telemetry message is ``[topic, header, *arrays]``: the topic as its own frame so SUB sockets filter
on it (ZeroMQ matches a subscription as a prefix of that frame; no topic name is a prefix of another,
so subscribing to a name selects exactly that topic, and "" selects all), then a header and arrays in
the wire format, with ``session`` in the header ("" for server-wide messages). The publisher never
blocks: a subscriber that falls behind loses messages at the high-water mark.

The policy server publishes ``chunk`` (every chunk sent), ``executed`` (every action a robot reports
executing), ``event`` (sessions, episodes, errors) and ``metrics`` (periodic figures): one
subscription sees the whole loop. A robot process's own PUB (:mod:`.robot_telemetry`) publishes
``action`` and ``event``.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zmq

from policy_steer.transport.codec import DEFAULT_LIMITS, Limits, decode, encode, to_wire
from policy_steer.transport.keys import KeyPair
from policy_steer.transport.security import CurveServer, apply_curve_client

SERVER_TOPICS = ("chunk", "executed", "event", "metrics")
TOPICS = (*SERVER_TOPICS, "action")  # what a subscriber takes by default: the server's and a robot's topics


@dataclass
class TelemetryMessage:
    topic: str
    header: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


class TelemetryPublisher:
    """PUB socket bound at ``endpoint``; used from one thread (ZeroMQ sockets are not thread-safe)."""

    def __init__(
        self, endpoint: str, context: zmq.Context | None = None, hwm: int = 100, curve: CurveServer | None = None
    ) -> None:
        self.context = context or zmq.Context.instance()
        self.socket = self.context.socket(zmq.PUB)
        self.socket.setsockopt(zmq.SNDHWM, hwm)
        self.socket.setsockopt(zmq.LINGER, 0)
        try:
            if curve is not None:
                curve.apply(self.socket)
            self.socket.bind(endpoint)
        except BaseException:
            self.socket.close(linger=0)
            raise
        self.endpoint = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self._seq = itertools.count()
        self.sent = 0
        self.dropped = 0

    def publish(self, topic: str, header: Mapping[str, Any], arrays: Mapping[str, Any] | None = None) -> None:
        """Publish one message; ``header`` needs ``session``; ``type`` defaults to the topic."""
        full = {"type": topic, "seq": next(self._seq), "stamp": time.monotonic(), **to_wire(dict(header))}
        frames = [topic.encode()] + encode(full, arrays)
        try:
            self.socket.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
            self.sent += 1
        except zmq.Again:  # PUB drops at the high-water mark; this is the rare case it says so
            self.dropped += 1

    def close(self, linger_ms: int = 0) -> None:
        """Close the socket; ``linger_ms`` > 0 gives queued messages that long to leave (bounded)."""
        self.socket.close(linger=linger_ms)


class TelemetrySubscriber:
    """SUB helper: ``recv(timeout_s)`` returns the next :class:`TelemetryMessage` or None.

    Subscriptions take a moment to reach the publisher (ZeroMQ's slow joiner): messages published
    right after connecting may be missed.
    """

    def __init__(
        self,
        endpoint: str,
        topics: tuple[str, ...] = TOPICS,
        context: zmq.Context | None = None,
        hwm: int = 1000,
        curve: tuple[KeyPair, bytes] | None = None,
        limits: Limits = DEFAULT_LIMITS,
        reconnect_ms: int = 100,
    ) -> None:
        self.context = context or zmq.Context.instance()
        self.socket = self.context.socket(zmq.SUB)
        self.socket.setsockopt(zmq.RCVHWM, hwm)
        self.socket.setsockopt(zmq.LINGER, 0)
        # connecting before the publisher binds: retry this often (a smaller value misses fewer first messages)
        self.socket.setsockopt(zmq.RECONNECT_IVL, reconnect_ms)
        self.socket.setsockopt(zmq.MAXMSGSIZE, limits.max_message_bytes + limits.max_header_bytes)
        if curve is not None:
            apply_curve_client(self.socket, *curve)
        for t in topics:
            self.socket.setsockopt(zmq.SUBSCRIBE, t.encode())
        self.socket.connect(endpoint)
        self.limits = limits

    def recv(self, timeout_s: float | None = None) -> TelemetryMessage | None:
        if not self.socket.poll(None if timeout_s is None else int(timeout_s * 1000)):
            return None
        frames = self.socket.recv_multipart(copy=False)
        msg = decode(frames[1:], accept=None, limits=self.limits, type_keys=False)
        return TelemetryMessage(topic=frames[0].bytes.decode(errors="replace"), header=msg.header, arrays=msg.arrays)

    def __iter__(self) -> Iterator[TelemetryMessage]:
        while True:
            msg = self.recv()
            if msg is not None:
                yield msg

    def close(self) -> None:
        self.socket.close(linger=0)
