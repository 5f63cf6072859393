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
no other commands: there is no remote "resume" (restart the robot process).

**Who may reach it**: the policy server's rule (:func:`policy_steer.transport.robot_telemetry.robot_bind_mode`).
It binds loopback by default. Beyond loopback it is refused unless the robot has CURVE keys
(``--curve_keys DIR``: a CURVE server with the robot's key pair ``DIR/<curve_name>.key_secret``, admitting
the public keys in ``DIR/authorized_clients/``) or the network is declared trusted (``--trusted_network
true``: anyone there can stop the arm and query its status; logged as a warning). A sender of a CURVE
socket passes its own key pair and the robot's public key: ``policy-steer estop --curve_keys DIR
--curve_name operator --robot_key robot`` (:func:`send_estop`'s ``curve``).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

from policy_steer.errors import PolicySteerError
from policy_steer.transport.codec import Limits, decode, encode
from policy_steer.transport.errors import BAD_HEADER, INTERNAL, ProtocolError
from policy_steer.transport.keys import KeyPair, load_keypair
from policy_steer.transport.robot_telemetry import CURVE, RobotCurveServer, log_bind_mode, robot_bind_mode
from policy_steer.transport.security import apply_curve_client

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5558"  # 5555 policy, 5556 its telemetry, 5557 the robot's telemetry
ESTOP, ESTOPPED, STATUS, ERROR = "estop", "estopped", "status", "error"
_LIMITS = Limits(max_message_bytes=64 * 1024, max_header_bytes=64 * 1024)


class EstopUnanswered(PolicySteerError):
    """No acknowledgement from the robot process's control socket."""


class EstopServer:
    """ROUTER bound at ``endpoint``; ``on_estop(reason, sender_stamp) -> (stopped, stop_stamp, first)``.

    ``curve_keys``, ``curve_name``, ``trusted_network``: who may reach it (module docstring); an endpoint
    beyond loopback without keys or ``trusted_network`` is refused (:class:`ConfigError`) before anything
    binds. ``mode`` says which it is (``loopback``, ``curve``, ``trusted_network``).
    """

    def __init__(
        self,
        endpoint: str,
        on_estop: Callable[[str, float | None], tuple[bool, float | None, bool]],
        status: Callable[[], dict[str, Any]],
        context: zmq.Context | None = None,
        curve_keys: str | None = None,
        curve_name: str = "client",
        trusted_network: bool = False,
    ) -> None:
        self.mode = robot_bind_mode(endpoint, "--estop", curve_keys, trusted_network)
        self.on_estop = on_estop
        self.status = status
        self.curve: RobotCurveServer | None = None
        self._own_context = None
        if self.mode == CURVE:  # ZAP runs per context: a context of its own, with its authenticator
            self._own_context = self.context = zmq.Context()
            try:
                self.curve = RobotCurveServer(self.context, curve_keys, curve_name)
            except BaseException:
                self.context.term()
                raise
        else:
            self.context = context or zmq.Context.instance()
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.MAXMSGSIZE, _LIMITS.max_message_bytes)
        try:
            if self.curve is not None:
                self.curve.apply(self.socket)
            self.socket.bind(endpoint)
        except zmq.ZMQError as e:
            self.socket.close(linger=0)
            self._release()
            raise PolicySteerError(f"cannot bind the e-stop socket {endpoint}: {e}") from None
        self.endpoint = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.mode_line = log_bind_mode("e-stop socket (--estop)", self.endpoint, self.mode,
                                       "stop the arm and query its status", self.curve)
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
        if not self._thread.is_alive():
            self._release()

    def _release(self) -> None:
        if self.curve is not None:
            self.curve.stop()
            self.curve = None
        if self._own_context is not None:
            self._own_context.term()
            self._own_context = None


CurveClient = tuple[KeyPair, bytes]  # the sender's key pair, the robot's public key


def estop_keys(folder: str, name: str = "client", robot_key: str = "client") -> CurveClient:
    """The sender's key pair ``<name>.key_secret`` and the robot's public key ``<robot_key>.key`` (the
    robot's ``--curve_name``; or the path of a ``.key`` file) from a folder made by ``policy-steer keys``."""
    folder_p = Path(folder)
    robot = Path(robot_key) if robot_key.endswith(".key") else folder_p / f"{robot_key}.key"
    return load_keypair(folder_p / f"{name}.key_secret"), load_keypair(robot, need_secret=False).public


def _request(
    endpoint: str, header: dict[str, Any], timeout_s: float, resend_s: float = 0.25, curve: CurveClient | None = None
) -> dict[str, Any]:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if curve is not None:
        apply_curve_client(sock, *curve)
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
            try:  # never blocks: with no connection up (nobody there, a refused CURVE handshake) it is sent again
                sock.send_multipart(encode({**header, "seq": seq, "stamp": time.monotonic()}), flags=zmq.NOBLOCK)
            except zmq.Again:
                pass
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


def send_estop(
    endpoint: str = DEFAULT_ENDPOINT, reason: str = "", timeout_s: float = 2.0, curve: CurveClient | None = None
) -> dict[str, Any]:
    """Send an e-stop (re-sent every 0.25 s until acknowledged); returns the ``estopped`` header.
    ``curve``: (own key pair, the robot's public key) for a CURVE control socket (:func:`estop_keys`)."""
    return _request(endpoint, {"type": ESTOP, "reason": reason}, timeout_s, curve=curve)


def query_status(endpoint: str = DEFAULT_ENDPOINT, timeout_s: float = 2.0, curve: CurveClient | None = None) -> dict[str, Any]:
    return _request(endpoint, {"type": STATUS}, timeout_s, curve=curve)
