"""Robot-side telemetry: what a robot process executed, and what happened to it, on its own PUB socket.

Protocol v2 has the robot report every executed action to the policy server (``executed``,
:meth:`~policy_steer.transport.client.PolicyClient.report_executed`), which republishes it on the
server's telemetry (topic ``executed``), so one subscription to the server sees the whole loop. A
robot process may also bind its **own** PUB endpoint, with the same framing as the server's telemetry
(a topic frame, then a msgpack header with ``session``, then raw arrays), for what the server never
sees (its link to the server may be down) and publishes two topics:

- ``action``: every executed action (held or not), with its control step, the id and row of the chunk
  it came from, and the monotonic stamp at which it was commanded;
- ``event``: holds, reconnects, request failures, dropped chunks, safety interventions, episode ends.

Publishing never blocks the control thread: messages go through a queue to a thread that owns the
socket (ZeroMQ sockets must stay on one thread), and a subscriber that falls behind loses messages at
the high-water mark.

**Who may reach a robot's sockets** (this PUB and the e-stop/status socket of
:mod:`policy_steer.hardware.estop`): the policy server's rule
(:func:`policy_steer.transport.security.check_bind`), applied by :func:`robot_bind_mode`. A loopback
or local endpoint binds as it is. Beyond loopback the bind is refused unless the robot has CURVE keys
(``--curve_keys DIR``: the socket becomes a CURVE server with the robot's own key pair,
``DIR/<curve_name>.key_secret``, and admits only the public keys in ``DIR/authorized_clients/``: see
:class:`RobotCurveServer`) or the operator declares the network trusted (``--trusted_network true``:
no encryption, a warning). The mode is logged for every socket.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq
from zmq.auth.thread import ThreadAuthenticator

from policy_steer.errors import ConfigError
from policy_steer.transport.keys import ALLOW_DIR, load_keypair
from policy_steer.transport.security import CurveServer, check_bind, is_loopback
from policy_steer.transport.telemetry import TelemetryPublisher

log = logging.getLogger(__name__)

ROBOT_TOPICS = ("action", "event")
CLOSE_LINGER_MS = 1000
LOOPBACK, CURVE, TRUSTED_NETWORK = "loopback", "curve", "trusted_network"  # the bind modes


class RobotCurveServer(CurveServer):
    """CURVE for a socket a robot process binds: the robot's own key pair (``<name>.key_secret`` in
    ``folder``, the one it also uses towards the policy server) and a ZAP authenticator that admits only
    the public keys in ``folder/authorized_clients/`` (the format ``policy-steer keys`` writes). A
    sender or subscriber connects with its own key pair and the robot's public key ``<name>.key``."""

    def __init__(self, context: zmq.Context, folder: str | Path, name: str = "client") -> None:  # noqa: D107
        folder = Path(folder)
        allow = folder / ALLOW_DIR
        if not allow.is_dir() or not any(allow.glob("*.key")):
            raise ConfigError(f"{allow} holds no public keys: nobody could reach the robot's sockets; copy the "
                              "operators' and subscribers' .key files there (policy-steer keys writes them)")
        self.keys = load_keypair(folder / f"{name}.key_secret")
        self.allow_dir = allow
        self.auth = ThreadAuthenticator(context, log=logging.getLogger("policy_steer.transport.zap"))
        self.auth.start()
        self.auth.configure_curve(domain="*", location=str(allow))
        self.n_allowed = len(list(allow.glob("*.key")))


def robot_bind_mode(endpoint: str, what: str, curve_keys: str | None = None, trusted_network: bool = False) -> str:
    """The mode a robot-side socket binds ``endpoint`` in: ``loopback``, ``curve`` (beyond loopback with
    keys) or ``trusted_network`` (beyond loopback, declared trusted); a :class:`ConfigError` naming
    ``what`` (e.g. ``--estop``) when it may not bind there at all. Nothing is bound or logged here."""
    curve = bool(curve_keys) and not is_loopback(endpoint)
    if not trusted_network:
        try:
            check_bind(endpoint, curve, trusted_network=False)
        except ConfigError as e:
            raise ConfigError(f"{what}: {e}") from None
    if curve:
        return CURVE
    return LOOPBACK if is_loopback(endpoint) else TRUSTED_NETWORK


def log_bind_mode(what: str, endpoint: str, mode: str, reach: str, curve: CurveServer | None = None) -> str:
    """One log line saying how a robot-side socket is reachable (a warning without CURVE off loopback);
    returns the short form for the host's status line."""
    if mode == CURVE and curve is not None:
        short = f"CURVE, {curve.n_allowed} allowed key(s)"
        log.info("%s bound at %s with CURVE: only the %d key(s) in %s can %s", what, endpoint, curve.n_allowed,
                 curve.allow_dir, reach)
    elif mode == TRUSTED_NETWORK:
        short = "no encryption, --trusted_network"
        log.warning("%s bound at %s without CURVE (--trusted_network): anyone on this network can %s", what,
                    endpoint, reach)
    else:
        short = "loopback"
        log.info("%s bound at %s (loopback: only this machine can %s)", what, endpoint, reach)
    return short


class RobotTelemetry:
    """A PUB socket bound at ``endpoint`` (``tcp://127.0.0.1:*`` picks a port), fed from any thread.

    ``session`` (the policy session the robot currently holds; "" before the first welcome) and
    ``robot`` (its name) go into every header, as do the keyword fields given to :meth:`action` and
    :meth:`event`. ``episode`` is set by the owner at each reset.

    ``curve_keys``, ``curve_name``, ``trusted_network``: who may subscribe (module docstring); an
    endpoint beyond loopback without keys or ``trusted_network`` is refused before anything binds.
    """

    def __init__(
        self,
        endpoint: str,
        robot: str = "robot",
        hwm: int = 1000,
        curve_keys: str | None = None,
        curve_name: str = "client",
        trusted_network: bool = False,
    ) -> None:
        self.mode = robot_bind_mode(endpoint, "--telemetry", curve_keys, trusted_network)
        self.mode_line = ""
        self.robot = robot
        self.session = ""
        self.episode = 0
        self.endpoint: str | None = None
        self.published = 0
        self._queue: queue.SimpleQueue[tuple[str, dict[str, Any], dict[str, np.ndarray]] | None] = queue.SimpleQueue()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        curve = (curve_keys, curve_name) if self.mode == CURVE else None
        self._thread = threading.Thread(target=self._run, args=(endpoint, hwm, curve), name="robot-telemetry",
                                        daemon=True)
        self._thread.start()
        self._ready.wait()
        if isinstance(self._error, ConfigError):
            raise ConfigError(f"robot telemetry (--telemetry {endpoint}): {self._error}") from None
        if self._error is not None:
            raise ConfigError(f"robot telemetry: cannot bind {endpoint}: {self._error}") from None

    def action(
        self,
        step: int,
        action: np.ndarray,
        chunk_id: int | None,
        index: int | None,
        stamp: float,
        commanded: np.ndarray | None = None,
        **fields: Any,
    ) -> None:
        """One executed action: ``action`` as sent to the actuators, ``commanded`` as the loop asked
        (they differ when the safety layer intervened). ``chunk_id`` None means a hold."""
        arrays = {"action": np.array(action, dtype=np.float32)}
        if commanded is not None:
            arrays["commanded"] = np.array(commanded, dtype=np.float32)
        header = {
            "step": int(step),
            "chunk_id": chunk_id,
            "index": index,
            "held": chunk_id is None,
            "stamp": float(stamp),
            **fields,
        }
        self._put("action", header, arrays)

    def event(self, event: str, **fields: Any) -> None:
        """A named event (``hold``, ``resumed``, ``reconnected``, ``safety``, ...) with its fields."""
        self._put("event", {"event": event, **fields}, {})

    def close(self, timeout_s: float = 2.0) -> None:
        """Send what is queued (best effort), then close the socket."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout_s)

    def __enter__(self) -> RobotTelemetry:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _put(self, topic: str, header: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        header = {"session": self.session, "robot": self.robot, "episode": self.episode, **header}
        header.setdefault("stamp", time.monotonic())
        self._queue.put((topic, header, arrays))

    def _run(self, endpoint: str, hwm: int, curve_keys: tuple[str, str] | None) -> None:
        context = zmq.Context()
        curve = None
        try:
            if curve_keys is not None:  # ZAP runs per context: this socket's context gets its authenticator
                curve = RobotCurveServer(context, *curve_keys)
            pub = TelemetryPublisher(endpoint, context, hwm=hwm, curve=curve)
        except (zmq.ZMQError, ConfigError) as e:
            self._error = e
            self._ready.set()
            if curve is not None:
                curve.stop()
            context.term()
            return
        self.endpoint = pub.endpoint
        self.mode_line = log_bind_mode("robot telemetry (--telemetry)", pub.endpoint, self.mode,
                                       "read what the robot executes and its events", curve)
        self._ready.set()
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    break
                pub.publish(*item)
                self.published += 1
        finally:
            # the last messages (episode_end, the final actions) get up to CLOSE_LINGER_MS to reach the
            # subscribers; a subscriber that is gone or stuck cannot hold the process longer than that
            pub.close(linger_ms=CLOSE_LINGER_MS)
            if curve is not None:
                curve.stop()
            context.term()
