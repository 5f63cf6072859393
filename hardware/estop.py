"""The robot process's control socket: an e-stop anyone can send, acknowledged.

The robot process binds a ROUTER (default ``tcp://127.0.0.1:5558``); ``policy-steer estop --endpoint
...`` (or :func:`send_estop`) connects a DEALER and sends one message. Messages use the framing of
``docs/protocol.md`` (frame 0 a msgpack header with ``v`` = 2, ``type``, ``seq``, ``stamp``, ``arrays: []``):

| type | extra keys | answer |
|---|---|---|
| ``estop`` | ``reason`` (str, optional) | ``estopped``: ``re``, ``stopped`` (bool), ``stop_stamp`` (monotonic s of the safe stop), ``first`` (false when the arm was already stopped) |
| ``status`` | | ``status``: ``re``, ``state`` (``running``, ``holding``, ``stopped``), ``step``, ``stop_reason`` |
| anything else, garbage | | ``error``: ``code``, ``message`` (docs/protocol.md's codes) |

The listener runs on its own thread and calls the safety layer's stop *at once*, without waiting for
the control loop's next step; the reply comes after the driver's safe stop returned. The socket takes
no other commands: there is no remote "resume" (restart the robot process). It binds loopback by
default; an e-stop socket on the network lets anyone stop the arm (and only that).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import zmq

from policy_steer.errors import PolicySteerError
from policy_steer.transport.codec import Limits, decode, encode
from policy_steer.transport.errors import BAD_HEADER, INTERNAL, ProtocolError

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5558"  # 5555 policy, 5556 its telemetry, 5557 the robot's telemetry
ESTOP, ESTOPPED, STATUS, ERROR = "estop", "estopped", "status", "error"
_LIMITS = Limits(max_message_bytes=64 * 1024, max_header_bytes=64 * 1024)


class EstopUnanswered(PolicySteerError):
    """No acknowledgement from the robot process's control socket."""


class EstopServer:
    """ROUTER bound at ``endpoint``; ``on_estop(reason, sender_stamp) -> (stopped, stop_stamp, first)``."""

    def __init__(
        self,
        endpoint: str,
        on_estop: Callable[[str, float | None], tuple[bool, float | None, bool]],
        status: Callable[[], dict[str, Any]],
        context: zmq.Context | None = None,
    ) -> None:
        self.on_estop = on_estop
        self.status = status
        self.context = context or zmq.Context.instance()
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.MAXMSGSIZE, _LIMITS.max_message_bytes)
        try:
            self.socket.bind(endpoint)
        except zmq.ZMQError as e:
            self.socket.close(linger=0)
            raise PolicySteerError(f"cannot bind the e-stop socket {endpoint}: {e}") from None
        self.endpoint = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self._seq = itertools.count(1)
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="policy-steer-estop", daemon=True)
        self.received = 0
        self._thread.start()

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        try:
            while not self._closing.is_set():
                if not poller.poll(50):
                    continue
                while True:
                    try:
                        frames = self.socket.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self._handle(frames)
        finally:
            self.socket.close(linger=0)

    def _handle(self, frames: list[bytes]) -> None:
        if len(frames) < 2:
            return  # no identity or no body: nobody to answer
        ident, body = frames[0], frames[1:]
        re = None
        try:
            msg = decode(body, accept={ESTOP, STATUS}, limits=_LIMITS, type_keys=False)
            re = msg.header["seq"]
            if msg.type == ESTOP:
                self.received += 1
                reason = msg.header.get("reason", "")
                if not isinstance(reason, str):
                    raise ProtocolError(BAD_HEADER, "header key 'reason' must be a string", re)
                stamp = msg.header.get("stamp")
                stopped, stop_stamp, first = self.on_estop(reason[:200], float(stamp))
                self._send(ident, {"type": ESTOPPED, "re": re, "stopped": stopped, "stop_stamp": stop_stamp, "first": first})
            else:
                self._send(ident, {"type": STATUS, "re": re, **self.status()})
        except ProtocolError as e:
            self._send(ident, {"type": ERROR, "code": e.code, "message": e.message, **({"re": e.re} if e.re is not None else {})})
        except Exception as e:  # noqa: BLE001 - the listener must survive anything a sender does
            log.exception("e-stop handling failed")
            reply = {"type": ERROR, "code": INTERNAL, "message": f"{type(e).__name__}: {e}"}
            self._send(ident, {**reply, **({"re": re} if re is not None else {})})

    def _send(self, ident: bytes, header: dict[str, Any]) -> None:
        try:
            self.socket.send_multipart([ident, *encode({**header, "seq": next(self._seq)})], flags=zmq.NOBLOCK)
        except zmq.ZMQError:
            pass  # the sender went away

    def close(self) -> None:
        self._closing.set()
        self._thread.join(2.0)


def _request(endpoint: str, header: dict[str, Any], timeout_s: float, resend_s: float = 0.25) -> dict[str, Any]:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        seqs: set[int] = set()
        deadline = time.monotonic() + timeout_s
        seq = 0
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise EstopUnanswered(f"no answer from the robot's control socket {endpoint} within {timeout_s:g} s")
            seq += 1
            seqs.add(seq)
            # the stamp is the moment of sending (monotonic clocks agree between processes of one machine)
            sock.send_multipart(encode({**header, "seq": seq, "stamp": time.monotonic()}))
            wait_until = min(deadline, now + resend_s)
            while time.monotonic() < wait_until:
                if not sock.poll(max(1, int((wait_until - time.monotonic()) * 1000))):
                    continue
                msg = decode(sock.recv_multipart(), limits=_LIMITS, type_keys=False)
                if msg.header.get("re") in seqs or msg.type == ERROR:
                    if msg.type == ERROR:
                        h = msg.header
                        raise PolicySteerError(f"the control socket answered error {h.get('code')}: {h.get('message')}")
                    return dict(msg.header)
    finally:
        sock.close(linger=0)
        ctx.term()


def send_estop(endpoint: str = DEFAULT_ENDPOINT, reason: str = "", timeout_s: float = 2.0) -> dict[str, Any]:
    """Send an e-stop (re-sent every 0.25 s until acknowledged); returns the ``estopped`` header."""
    return _request(endpoint, {"type": ESTOP, "reason": reason}, timeout_s)


def query_status(endpoint: str = DEFAULT_ENDPOINT, timeout_s: float = 2.0) -> dict[str, Any]:
    return _request(endpoint, {"type": STATUS}, timeout_s)
