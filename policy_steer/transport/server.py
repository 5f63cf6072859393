"""The policy server: a ROUTER socket speaking protocol v2 (``docs/protocol.md``) in front of a
:class:`~policy_steer.transport.inference.ServedPolicy`.

Two threads. The **socket thread** owns every socket: it decodes and checks each message, answers
``hello``, ``ping`` and every malformed message at once, validates ``observe`` arrays against the
session's spec (names, dtype, shape, finite floats) and the episode context of ``episode`` and
``context`` against its published schema, and queues the valid ones. It also takes ``executed``
notifications (checked against the spec: ``action``/``commanded`` [A], ``state`` like
``observation.state``) and republishes them on telemetry, without the inference thread. The
**inference thread** (:mod:`.inference`) runs the policy and hands replies back through a wake-up
socket.

Clients of another protocol version get a ``version`` error naming v2 and the spec; to a version 1
client it is written in version 1 (whose ``error`` is the same), so that client can read it.

Robustness: nothing a client sends can end the server (every failure becomes an ``error`` reply,
bounded in size, with ``re`` whenever the header's ``seq`` could be read); sizes are checked on the
header before arrays are read; libzmq itself refuses any frame above the message limit
(``MAXMSGSIZE``: the sender's connection is dropped, and with it its session) and drops replies to
clients that do not read them (ROUTER without ``ROUTER_MANDATORY``), so a slow or hostile client
cannot block the loop. Memory is bounded by the session limit (one queued observe and a few other
jobs per session) and the socket high-water marks. Bad messages are logged once per kind per
``log_interval_s`` (:class:`~policy_steer.transport.ratelog.RateLimitedLog`), never once per message.

Costs: the operator's :class:`~policy_steer.transport.limits.ServerLimits` (announced in
``welcome.limits``) bound what a ``configure`` may ask for (checked here, on receipt, before it is
queued) and how long a chunk may take; sessions take turns on the model (:mod:`.scheduler`).

Stopping (:meth:`PolicyServer.stop`) takes at most ``stop_timeout_s``: the sockets close, a chunk in
flight gets a short grace to finish and is then abandoned (:meth:`InferenceWorker.abandon`), so that
no thread is inside torch when the interpreter finalizes (CPython 3.12 ends such a daemon thread
with ``pthread_exit``, whose forced unwind through libtorch's ``noexcept`` frames calls
``std::terminate``: "terminate called without an active exception", exit 134).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zmq

from policy_steer.errors import ConfigError
from policy_steer.transport.codec import FLOAT_DTYPES, Limits, decode, encode
from policy_steer.transport.errors import BAD_ARRAY, BAD_HEADER, BUSY, INTERNAL, NO_SESSION, VERSION, ProtocolError
from policy_steer.transport.inference import (
    InferenceWorker,
    Outgoing,
    ServedPolicy,
    check_served_policy,
    error_frames,
)
from policy_steer.transport.messages import (
    CONFIGURE,
    CONTEXT,
    EPISODE,
    EXECUTED,
    EXECUTED_ACTION,
    EXECUTED_COMMANDED,
    EXECUTED_STATE,
    HELLO,
    OBSERVE,
    PING,
    PONG,
    PREFIX,
    SERVER_ACCEPTS,
    WELCOME,
    Message,
    context_from_wire,
)
from policy_steer.transport.limits import ServerLimits
from policy_steer.transport.ratelog import RateLimitedLog
from policy_steer.transport.scheduler import CONFIGURE_JOB, CONTEXT_JOB, EPISODE_JOB, OBSERVE_JOB, Job, JobQueue
from policy_steer.transport.security import CurveServer, check_bind
from policy_steer.transport.sessions import Session, SessionTable
from policy_steer.transport.telemetry import TelemetryPublisher
from policy_steer.types import OBS_STATE, ExecutedStep

log = logging.getLogger(__name__)

SERVER_NAME = "policy-steer/0.1.0"


@dataclass
class ServerConfig:
    """Options of :class:`PolicyServer` (and of ``policy-steer serve``)."""

    bind: str = "tcp://127.0.0.1:5555"
    telemetry: str | None = None  # PUB endpoint, e.g. tcp://127.0.0.1:5556; None: no telemetry
    telemetry_hwm: int = 100  # messages queued per subscriber before they are dropped
    curve_keys: str | None = None  # folder from `policy-steer keys`; None: no encryption
    trusted_network: bool = False  # allow a non-loopback bind without CURVE
    session_timeout_s: float = 30.0
    max_sessions: int = 64
    max_message_bytes: int = 64 * 2**20
    metrics_interval_s: float = 1.0
    max_batch: int = 1  # >1: run queued observes of several sessions as one call, if the policy is a BatchPolicy
    batch_window_ms: float = 2.0  # max_batch > 1: wait at most this long for more (inference.py, "batching window")
    max_error_events_per_s: int = 20  # error events on telemetry (all are counted in metrics)
    max_session_jobs: int = 8  # configure/episode/context messages of one session queued at once; more: busy
    limits: ServerLimits = field(default_factory=ServerLimits)  # the costs a client may choose (welcome.limits)
    stop_timeout_s: float = 1.0  # stop() returns within this (a chunk in flight is abandoned if it must)
    log_interval_s: float = 10.0  # bad messages and failures: one log line per kind per interval


@dataclass
class ServerStats:
    received: int = 0
    chunks: int = 0
    welcomes: int = 0
    pongs: int = 0
    configured: int = 0
    episodes: int = 0
    executed: int = 0
    busy: int = 0
    errors: dict[str, int] | None = None
    expired: int = 0

    def __post_init__(self) -> None:
        self.errors = self.errors or {}


class PolicyServer:
    """``start()`` binds and returns; ``stop()`` closes everything. Also a context manager.

    ``endpoint`` / ``telemetry_endpoint`` are the bound addresses (``tcp://127.0.0.1:*`` picks a port).
    """

    def __init__(self, policy: ServedPolicy, config: ServerConfig | None = None, recording: Any = None) -> None:
        """``recording``: a :class:`policy_steer.recording.serve.ServerRecording` (``serve --record_bag``,
        ``--foxglove``) that sees every episode, observation, chunk and executed step; ended by ``stop``."""
        check_served_policy(policy)
        self.recording = recording
        self.policy = policy
        self.config = cfg = config or ServerConfig()
        self.spec = policy.spec
        self.limits = Limits(max_message_bytes=cfg.max_message_bytes)
        self.sessions = SessionTable(timeout_s=cfg.session_timeout_s, max_sessions=cfg.max_sessions)
        self.queue = JobQueue(max_session_jobs=cfg.max_session_jobs)
        self.stats = ServerStats()
        self.endpoint: str | None = None
        self.telemetry_endpoint: str | None = None
        self._seq = itertools.count()
        self._outbox: deque[Outgoing] = deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self._latencies: list[float] = []
        self._error_events = 0
        self.errors_log = RateLimitedLog(log, cfg.log_interval_s)
        self.stopped_cleanly: bool | None = None  # set by stop(): every thread ended
        self._stopped = False
        self._welcome_fields = self._make_welcome_fields()
        self.context = zmq.Context()
        self.curve: CurveServer | None = None
        self.router: zmq.Socket | None = None
        self.pub: TelemetryPublisher | None = None
        self.worker: InferenceWorker | None = None
        self._wake_addr = f"inproc://policy-steer-wake-{id(self)}"
        self._wake_push: zmq.Socket | None = None
        self._wake_lock = threading.Lock()

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self) -> PolicyServer:
        cfg = self.config
        check_bind(cfg.bind, cfg.curve_keys is not None, cfg.trusted_network)
        if cfg.telemetry:
            check_bind(cfg.telemetry, cfg.curve_keys is not None, cfg.trusted_network)
        if cfg.curve_keys:
            self.curve = CurveServer(self.context, cfg.curve_keys)
        self._thread = threading.Thread(target=self._run, name="policy-steer-sockets", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._start_error is not None:
            self.stop()
            err = self._start_error
            where = cfg.bind + (f" and {cfg.telemetry}" if cfg.telemetry else "")
            raise ConfigError(f"cannot bind {where}: {err}") if isinstance(err, zmq.ZMQError) else err
        self.worker = InferenceWorker(
            self.policy, self.queue, self._post, lambda: next(self._seq), max_batch=cfg.max_batch,
            batch_window_s=cfg.batch_window_ms / 1e3, open_sessions=lambda: len(self.sessions),
            limits=cfg.limits, errors_log=self.errors_log,
        )
        self.worker.recording = self.recording
        self.worker.start()
        security = (
            f"CURVE, {self.curve.n_allowed} allowed client key(s)"
            if self.curve
            else ("no CURVE, loopback only" if not cfg.trusted_network else "no CURVE, trusted network")
        )
        log.info(
            "serving %s on %s (%s)%s",
            self.spec.name,
            self.endpoint,
            security,
            f", telemetry on {self.telemetry_endpoint}" if self.telemetry_endpoint else "",
        )
        return self

    def stop(self, timeout_s: float | None = None) -> bool:
        """Close everything within ``timeout_s`` (default ``stop_timeout_s``); True when every thread ended.

        A chunk in flight gets part of the time to finish (its reply is sent if the socket is still
        open), then is abandoned at its next Python instruction. False means the inference thread is
        still inside one long call of the policy: the process must then leave without finalizing the
        interpreter (``policy-steer serve`` does, see :func:`~policy_steer.transport.cli.serve_until_signal`).
        """
        if self._stopped:
            return bool(self.stopped_cleanly)
        self._stopped = True
        budget = self.config.stop_timeout_s if timeout_s is None else float(timeout_s)
        deadline = time.monotonic() + budget
        left = lambda: max(0.0, deadline - time.monotonic())  # noqa: E731
        for job in self.queue.close():  # nothing more runs: queued and later requests are answered busy
            job.frames = []
            self._post(Outgoing(
                job.identity, error_frames(next(self._seq), BUSY, f"{job.kind}: the server is stopping", job.seq),
                kind=BUSY,
            ))
        worker = self.worker
        if worker is not None:
            worker.stop()
            # a chunk in flight: a short grace to finish, while the socket thread still sends its reply
            worker.join(min(left(), 0.4 * budget))
        self._stop.set()
        if self._thread is not None:
            self._thread.join(left())
        if self.curve is not None:
            self.curve.stop()
            self.curve = None
        with self._wake_lock:
            if self._wake_push is not None:
                self._wake_push.close(linger=0)
                self._wake_push = None
        if worker is not None and worker.is_alive():
            # Everything this thread needs a lock for is done: abandon the chunk in flight.
            worker.abandon()
            worker.join(max(left(), 0.05))
        sockets_closed = self._thread is None or not self._thread.is_alive()
        if sockets_closed and not self.context.closed:
            self.context.term()  # the inference thread holds no socket: this never waits on it
        self.errors_log.flush(force=True)
        if self.recording is not None:
            self.recording.close("the server stopped", timeout_s=left() + 5.0)  # every bag gets its metadata
        self.stopped_cleanly = sockets_closed and (worker is None or not worker.is_alive())
        if not self.stopped_cleanly:
            log.warning(
                "%s still running after %.1f s (stuck in one call of the policy)",
                "the inference thread" if sockets_closed else "the socket thread",
                budget,
            )
        return self.stopped_cleanly

    def __enter__(self) -> PolicyServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # --- the socket thread ----------------------------------------------------------------------
    def _open_sockets(self) -> tuple[zmq.Socket, zmq.Socket, TelemetryPublisher | None]:
        cfg = self.config
        opened: list[Any] = []
        try:
            router = self.context.socket(zmq.ROUTER)
            opened.append(router)
            router.setsockopt(zmq.LINGER, 0)
            # libzmq disconnects a peer that sends a frame above this, before allocating it.
            router.setsockopt(zmq.MAXMSGSIZE, self.limits.max_message_bytes + self.limits.max_header_bytes)
            router.setsockopt(zmq.RCVHWM, 100)  # per client: messages waiting to be read (a robot has a few in flight)
            router.setsockopt(zmq.SNDHWM, 1000)
            if self.curve is not None:
                self.curve.apply(router)
            router.bind(cfg.bind)
            self.endpoint = router.getsockopt_string(zmq.LAST_ENDPOINT)
            wake = self.context.socket(zmq.PULL)
            opened.append(wake)
            wake.setsockopt(zmq.LINGER, 0)
            wake.bind(self._wake_addr)
            pub = None
            if cfg.telemetry:
                pub = TelemetryPublisher(cfg.telemetry, self.context, hwm=cfg.telemetry_hwm, curve=self.curve)
                self.telemetry_endpoint = pub.endpoint
            return router, wake, pub
        except BaseException:
            for sock in opened:  # an open socket would hang context.term() in stop()
                sock.close(linger=0)
            raise

    def _run(self) -> None:
        try:
            router, wake, pub = self._open_sockets()
        except BaseException as e:
            self._start_error = e
            self._started.set()
            return
        self.router, self.pub = router, pub
        self._started.set()
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        poller.register(wake, zmq.POLLIN)
        next_expiry = next_metrics = time.monotonic() + 1.0
        try:
            while not self._stop.is_set():
                events = dict(poller.poll(100))
                if wake in events:
                    while True:
                        try:
                            wake.recv(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                if router in events:
                    for _ in range(64):  # a bounded burst, then replies get their turn
                        try:
                            frames = router.recv_multipart(zmq.NOBLOCK, copy=False)
                        except zmq.Again:
                            break
                        self._handle(frames)
                self._flush()
                now = time.monotonic()
                if now >= next_expiry:
                    self._expire(now)
                    self.errors_log.flush()
                    next_expiry = now + 1.0
                if pub is not None and now >= next_metrics:
                    self._publish_metrics()
                    next_metrics = now + self.config.metrics_interval_s
            self._flush()  # replies that are ready still go out
        except Exception:  # the loop itself must not fail silently
            log.exception("socket loop failed")
            raise
        finally:
            router.close(linger=0)
            wake.close(linger=0)
            if pub is not None:
                pub.close()

    def _post(self, out: Outgoing) -> None:
        """From the inference thread: queue a reply and wake the socket thread."""
        self._outbox.append(out)
        with self._wake_lock:
            if self._wake_push is None:
                if self._stop.is_set():
                    return
                self._wake_push = self.context.socket(zmq.PUSH)
                self._wake_push.setsockopt(zmq.LINGER, 0)
                self._wake_push.connect(self._wake_addr)
            try:
                self._wake_push.send(b"", zmq.NOBLOCK)
            except zmq.Again:  # the socket thread has wake-ups queued already
                pass

    def _flush(self) -> None:
        while self._outbox:
            out = self._outbox.popleft()
            if out.frames:  # (telemetry-only entries have none)
                self._send(out.identity, out.frames)
            if out.kind == "chunk":
                self.stats.chunks += 1
                if out.server_ms is not None:
                    self._latencies.append(out.server_ms)
            elif out.kind == "configured":
                self.stats.configured += 1
            elif out.kind == "episode_started":
                self.stats.episodes += 1
            elif out.kind == "telemetry":
                pass
            else:
                self._count_error(out.kind)
            if out.telemetry is not None and self.pub is not None:
                self.pub.publish(*out.telemetry)

    def _send(self, identity: bytes, frames: list[Any]) -> None:
        try:
            self.router.send_multipart([identity, *frames], flags=zmq.NOBLOCK, copy=False)
        except zmq.ZMQError:  # the peer is gone or not reading: ROUTER drops, so do we
            pass

    # --- messages -------------------------------------------------------------------------------
    def _handle(self, frames: list[zmq.Frame]) -> None:
        identity = frames[0].bytes
        peer = identity
        if self.curve is not None:  # bind sessions to the client's key as well as its connection
            peer = identity + b"|" + (frames[0].get("User-Id") or "").encode()
        now = time.monotonic()
        self.stats.received += 1
        self.sessions.touch(peer, now)
        msg = None
        try:
            msg = decode(frames[1:], accept=SERVER_ACCEPTS, limits=self.limits)
            kind = msg.type
            if kind == PING:
                self._send(identity, encode({"type": PONG, "seq": next(self._seq), "re": msg.seq}))
                self.stats.pongs += 1
            elif kind == PONG:
                pass  # an answer to nothing we sent; it kept the session alive
            elif kind == HELLO:
                self._hello(identity, peer, msg, now)
            elif kind == OBSERVE:
                self._observe(identity, peer, msg, frames, now)
            elif kind == CONFIGURE:
                self._configure(identity, peer, msg, now)
            elif kind in (EPISODE, CONTEXT):
                self._episode_or_context(identity, peer, msg, now)
            elif kind == EXECUTED:
                self._executed(peer, msg)
        except ProtocolError as e:
            # a version 1 peer reads a version 1 error (the same keys): it learns why, in its own version
            version = 1 if e.code == VERSION and e.peer_version == 1 else None
            self._reply_error(identity, e.code, e.message, e.re, version)
            self.errors_log.log(e.code, logging.INFO, f"refused a message ({e.code}): {e.message[:300]}")
        except Exception as e:  # a bug of ours: answer, log (its stack once), keep serving
            self.errors_log.log(
                f"internal: {type(e).__name__}", logging.ERROR,
                f"failed to handle a message: {type(e).__name__}: {str(e)[:300]}", exc_info=True,
            )
            self._reply_error(identity, INTERNAL, f"{type(e).__name__}: {e}", None if msg is None else msg.seq)

    def _reply_error(
        self, identity: bytes, code: str, message: str, re: int | None, version: int | None = None
    ) -> None:
        self._send(identity, error_frames(next(self._seq), code, message, re, version))
        self._count_error(code)
        if self.pub is not None and self._error_events < self.config.max_error_events_per_s:
            self._error_events += 1
            self.pub.publish("event", {"session": "", "event": "error", "code": code, "message": message[:200]})

    def _count_error(self, code: str) -> None:
        if code == BUSY:
            self.stats.busy += 1
        self.stats.errors[code] = self.stats.errors.get(code, 0) + 1

    def _make_welcome_fields(self) -> dict[str, Any]:
        s = self.spec
        return {
            "policy": {
                "name": s.name,
                "family": s.family,
                "horizon": int(s.horizon),
                "action_dim": int(s.action_dim),
                "n_action_steps": int(s.n_action_steps),
                "control_hz": float(s.control_hz),
            },
            "observation": {
                k: {"dtype": f.dtype, "shape": [int(d) for d in f.shape]} for k, f in s.observation.items()
            },
            "action": {"dtype": "<f4", "shape": [int(s.horizon), int(s.action_dim)]},
            "server": SERVER_NAME,
            "limits": self.config.limits.to_wire(),
        }

    def _hello(self, identity: bytes, peer: bytes, msg: Message, now: float) -> None:
        session, replaced = self.sessions.open(peer, msg.get("client"), float(msg.get("control_hz")), now, msg.seq)
        if replaced is not None:
            self._close_session(replaced, "replaced by a new hello")
        header = {"type": WELCOME, "seq": next(self._seq), "re": msg.seq, "session": session.id, **self._welcome_fields}
        self._send(identity, encode(header))
        self.stats.welcomes += 1
        if self.pub is not None:
            self.pub.publish(
                "event",
                {
                    "session": session.id,
                    "event": "session_opened",
                    "client": session.client,
                    "control_hz": session.control_hz,
                },
            )

    def _check_arrays(self, msg: Message) -> np.ndarray | None:
        """The observe's arrays against the spec promised in ``welcome``; returns the prefix (or None)."""
        re = msg.seq
        features = self.spec.observation
        for name, feat in features.items():
            arr = msg.arrays.get(name)
            if arr is None:
                raise ProtocolError(
                    BAD_ARRAY, f"observe: array {name!r} is missing (welcome asked for {sorted(features)})", re
                )
            if arr.dtype.str != feat.dtype or arr.shape != tuple(feat.shape):
                raise ProtocolError(
                    BAD_ARRAY,
                    f"observe: array {name!r} is {arr.dtype.str} {list(arr.shape)}; welcome promised {feat.dtype} {list(feat.shape)}",
                    re,
                )
            if feat.dtype in FLOAT_DTYPES and not np.isfinite(arr).all():
                raise ProtocolError(BAD_ARRAY, f"observe: array {name!r} holds non-finite values", re)
        extra = set(msg.arrays) - set(features) - {PREFIX}
        if extra:
            raise ProtocolError(
                BAD_ARRAY,
                f"observe: unexpected arrays {sorted(extra)[:4]} (welcome asked for {sorted(features)} and optional 'prefix')",
                re,
            )
        prefix = msg.arrays.get(PREFIX)
        if prefix is not None:
            a = self.spec.action_dim
            if prefix.dtype.str != "<f4" or prefix.ndim != 2 or prefix.shape[1] != a:
                raise ProtocolError(
                    BAD_ARRAY,
                    f"observe: 'prefix' is {prefix.dtype.str} {list(prefix.shape)}; it must be <f4 [d, {a}]",
                    re,
                )
            if not np.isfinite(prefix).all():
                raise ProtocolError(BAD_ARRAY, "observe: 'prefix' holds non-finite values", re)
        start, committed = msg.get("prefix_start"), msg.get("prefix_committed")
        if (start is not None or committed is not None) and prefix is None:
            raise ProtocolError(BAD_HEADER, "observe: 'prefix_start'/'prefix_committed' given without a 'prefix'", re)
        if start is not None and start > msg.get("start_step"):
            raise ProtocolError(BAD_HEADER, f"observe: 'prefix_start' {start} is after 'start_step' {msg.get('start_step')}", re)
        if committed is not None and not 0 <= committed <= prefix.shape[0]:
            raise ProtocolError(BAD_HEADER, f"observe: 'prefix_committed' {committed} is outside [0, {prefix.shape[0]}]", re)
        return prefix

    def _observe(self, identity: bytes, peer: bytes, msg: Message, frames: list[Any], now: float) -> None:
        session = self.sessions.get(msg.get("session"), peer, msg.seq)
        prefix = self._check_arrays(msg)
        job = Job(
            kind=OBSERVE_JOB,
            session=session,
            identity=identity,
            seq=msg.seq,
            received=now,
            stamp=float(msg.get("stamp")),
            step=msg.get("step"),
            start_step=msg.get("start_step"),
            state_kind=msg.get("state_kind"),
            task=msg.get("task"),
            arrays={k: v for k, v in msg.arrays.items() if k != PREFIX},
            prefix=prefix,
            prefix_start=msg.get("prefix_start"),
            prefix_committed=msg.get("prefix_committed"),
            frames=frames,
        )
        old = self.queue.put(job)
        if old is not None:
            old.frames = []
            self._reply_error(
                old.identity,
                BUSY,
                f"observe of step {old.step} dropped: a newer observe (step {job.step}) of the session arrived",
                old.seq,
            )

    def _configure(self, identity: bytes, peer: bytes, msg: Message, now: float) -> None:
        session = self.sessions.get(msg.get("session"), peer, msg.seq)
        steer = msg.get("steer")
        self.config.limits.check_steer(steer, msg.seq)  # over_limit etc. at once; nothing is queued
        job = Job(
            kind=CONFIGURE_JOB,
            session=session,
            identity=identity,
            seq=msg.seq,
            received=now,
            task=msg.get("task"),
            steer=steer,
        )
        self.queue.put(job)

    def _episode_or_context(self, identity: bytes, peer: bytes, msg: Message, now: float) -> None:
        """``episode`` and ``context``: the context checked here (bad_context), applied in session order."""
        session = self.sessions.get(msg.get("session"), peer, msg.seq)
        if msg.arrays:
            raise ProtocolError(BAD_ARRAY, f"{msg.type}: carries no arrays, got {sorted(msg.arrays)[:4]}", msg.seq)
        context = context_from_wire(msg.get("context"), msg.type, msg.seq)
        job = Job(
            kind=EPISODE_JOB if msg.type == EPISODE else CONTEXT_JOB,
            session=session,
            identity=identity,
            seq=msg.seq,
            received=now,
            stamp=float(msg.get("stamp")),
            context=context,
        )
        self.queue.put(job)

    def _check_executed(self, msg: Message) -> dict[str, np.ndarray]:
        """The arrays of an ``executed``: ``action``/``commanded`` <f4 [A], optional ``state`` <f4 like welcome's."""
        re, a = msg.seq, int(self.spec.action_dim)
        wants = {EXECUTED_ACTION: (a,), EXECUTED_COMMANDED: (a,)}
        state_feature = self.spec.observation.get(OBS_STATE)
        if EXECUTED_STATE in msg.arrays:
            if state_feature is None:
                raise ProtocolError(
                    BAD_ARRAY, "executed: 'state' given, but welcome promised no observation.state", re
                )
            wants[EXECUTED_STATE] = tuple(int(d) for d in state_feature.shape)
        extra = set(msg.arrays) - set(wants) - {EXECUTED_STATE}
        if extra:
            raise ProtocolError(
                BAD_ARRAY,
                f"executed: unexpected arrays {sorted(extra)[:4]} (it carries action, commanded, optional state)",
                re,
            )
        for name, shape in wants.items():
            arr = msg.arrays.get(name)
            if arr is None:
                raise ProtocolError(BAD_ARRAY, f"executed: array {name!r} is missing", re)
            if arr.dtype.str != "<f4" or arr.shape != shape:
                raise ProtocolError(
                    BAD_ARRAY,
                    f"executed: array {name!r} is {arr.dtype.str} {list(arr.shape)}; it must be <f4 {list(shape)}",
                    re,
                )
            if not np.isfinite(arr).all():
                raise ProtocolError(BAD_ARRAY, f"executed: array {name!r} holds non-finite values", re)
        return dict(msg.arrays)

    def _executed(self, peer: bytes, msg: Message) -> None:
        """Checked, counted, republished on telemetry (topic ``executed``); answered only when malformed."""
        session = self.sessions.get(msg.get("session"), peer, msg.seq)
        arrays = self._check_executed(msg)
        session.executed += 1
        self.stats.executed += 1
        if self.recording is not None:
            start = msg.get("chunk_start_step")
            self.recording.executed(session.id, session.episode, ExecutedStep(
                step=int(msg.get("step")), action=arrays["action"], commanded=arrays["commanded"],
                state=arrays.get("state"), chunk_start_step=start, index=msg.get("index"), safety=msg.get("safety"),
                stamp=float(msg.get("stamp")),
            ))
        if self.pub is not None:
            start = msg.get("chunk_start_step")
            self.pub.publish(
                EXECUTED,
                {
                    "session": session.id,
                    "step": msg.get("step"),
                    "chunk_start_step": start,
                    "index": msg.get("index"),
                    "held": start is None,
                    "safety": msg.get("safety"),
                    "robot_stamp": float(msg.get("stamp")),
                },
                arrays,
            )

    def _close_session(self, session: Session, why: str) -> None:
        if self.recording is not None:
            self.recording.end_session(session.id, why)
        for job in self.queue.drop_session(session):
            job.frames = []
            self._reply_error(
                job.identity, NO_SESSION, f"session {session.id} closed ({why}) before this request ran", job.seq
            )
        if self.pub is not None:
            self.pub.publish("event", {"session": session.id, "event": "session_closed", "why": why})

    def _expire(self, now: float) -> None:
        self._error_events = 0  # the per-second budget of error events
        for session in self.sessions.expire(now):
            self.stats.expired += 1
            self._close_session(session, f"no message for {self.sessions.timeout_s:g} s")

    def _publish_metrics(self) -> None:
        lat = np.asarray(self._latencies or [np.nan])
        self._latencies = []
        self.pub.publish(
            "metrics",
            {
                "session": "",
                "sessions": len(self.sessions),
                "queued": len(self.queue),
                "received": self.stats.received,
                "chunks": self.stats.chunks,
                "episodes": self.stats.episodes,
                "executed": self.stats.executed,
                "busy": self.stats.busy,
                "errors": dict(self.stats.errors),
                "server_ms_p50": float(np.nanpercentile(lat, 50)) if np.isfinite(lat).any() else None,
                "server_ms_p99": float(np.nanpercentile(lat, 99)) if np.isfinite(lat).any() else None,
                "chunks_in_interval": int(np.isfinite(lat).sum()),
            },
        )
