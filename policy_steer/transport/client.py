"""The robot-side client: a DEALER socket speaking protocol v2 (``docs/protocol.md``) to a policy server.

One background I/O thread owns the socket. It sends requests, matches replies to them by ``seq``,
answers the server's pings, pings the server every ``heartbeat_s``, and keeps the session alive across
failures:

- a reconnect (the server restarted, the link dropped) is seen on the socket monitor; the client then
  sends ``hello`` again, replays its last ``configure`` settings, then its episode (an ``episode``
  with the last accepted episode context, updated by every ``update_context`` since: a new session
  has no episode), and re-sends the requests still pending under the new session (those whose
  deadline has not passed);
- a server that answers ``no_session`` (it restarted, or the session expired) triggers the same;
- no message from the server for ``dead_after_s`` (a half-open connection) makes the client drop the
  socket and connect a new one;
- after a re-``hello`` the server must describe the same policy; if it does not, every request fails
  with :class:`SpecChanged` until ``connect()`` is called again.

Requests never outlive their deadline: a reply that arrives later is dropped, so a robot never gets a
stale chunk from this client, and every chunk is checked (dtype, shape promised in ``welcome``, finite
values, the requested ``start_step``) before it is handed over.

Use ``request_chunk`` (blocking) or ``submit_chunk`` (returns a :class:`ChunkRequest` at once; poll it
with ``done()``/``poll()`` or wait with ``result()``), which is what an asynchronous runtime needs:
submit when the action queue runs low, keep executing, pick the chunk up when it is there.

The episode (v2): ``start_episode(context)`` (blocking; :class:`RemoteError` with the refusal's
``code`` when a strategy cannot act with the context), then ``update_context(context)`` whenever the
scene changes and ``report_executed(step)`` after every action. The last two are notifications: they
return at once, the server answers them only when it refuses them, and such an answer arrives as an
``on_event`` (``context_error``, ``executed_error``). Contexts and executed steps are checked here
first (a ValidationError names the problem and nothing is sent).

The client keeps references to the observation arrays until the request completes (frames are sent
without copying): do not write into them meanwhile.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import itertools
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zmq
import zmq.utils.monitor

from policy_steer.errors import ValidationError
from policy_steer.transport.codec import ALLOWED_DTYPES, FLOAT_DTYPES, Limits, decode, encode
from policy_steer.transport.errors import (
    BUSY,
    NO_SESSION,
    BusyError,
    ClientClosed,
    ProtocolError,
    RemoteError,
    RequestTimeout,
    SpecChanged,
    TransportError,
)
from policy_steer.transport.keys import client_keys
from policy_steer.transport.messages import (
    ACTIONS,
    CHUNK,
    CLIENT_ACCEPTS,
    CONFIGURE,
    CONFIGURED,
    CONTEXT,
    EPISODE,
    EPISODE_STARTED,
    ERROR,
    EXECUTED,
    EXECUTED_ACTION,
    EXECUTED_COMMANDED,
    EXECUTED_STATE,
    HELLO,
    OBSERVE,
    PING,
    PONG,
    PREFIX,
    STATE_KINDS,
    WELCOME,
    Message,
    context_to_wire,
)
from policy_steer.transport.security import apply_curve_client
from policy_steer.types import (
    OBS_STATE,
    TASK,
    Chunk,
    EpisodeContext,
    ExecutedStep,
    FeatureSpec,
    Observation,
    PolicySpec,
)

log = logging.getLogger(__name__)


@dataclass
class ClientConfig:
    """Options of :class:`PolicyClient`."""

    endpoint: str = "tcp://127.0.0.1:5555"
    name: str = "policy-steer-client"  # sent in hello
    control_hz: float = 10.0  # sent in hello
    timeout_s: float = 1.0  # default deadline of a request
    episode_timeout_s: float = 30.0  # default deadline of an `episode` (VLS prepares its reward program then)
    connect_timeout_s: float = 10.0  # connect() waits this long for the first welcome
    heartbeat_s: float = 0.5  # ping period
    dead_after_s: float = 3.0  # no message from the server for this long: new socket, new hello
    hello_retry_s: float = 1.0  # re-send an unanswered hello after this long
    max_resends: int = 2  # re-sends of one request after reconnects
    max_tracked_notifications: int = 4096  # context/executed seqs remembered to attribute a late refusal
    curve_keys: str | None = None  # folder from `policy-steer keys`: <curve_name>.key_secret and server.key
    curve_name: str = "client"
    max_message_bytes: int = 64 * 2**20


@dataclass(frozen=True)
class Welcome:
    """What the server promised in ``welcome``."""

    session: str
    spec: PolicySpec
    action_shape: tuple[int, int]
    server: str
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @classmethod
    def from_message(cls, msg: Message) -> Welcome:
        h = msg.header
        try:
            pol = h["policy"]
            obs = {
                str(k): FeatureSpec(str(v["dtype"]), tuple(int(d) for d in v["shape"]))
                for k, v in h["observation"].items()
            }
            for k, f in obs.items():
                if f.dtype not in ALLOWED_DTYPES:
                    raise ValueError(f"observation {k!r} has dtype {f.dtype!r}")
            action = h["action"]
            shape = tuple(int(d) for d in action["shape"])
            if action["dtype"] != "<f4" or len(shape) != 2:
                raise ValueError(f"action must be <f4 [H, A], got {action}")
            spec = PolicySpec(
                name=str(pol["name"]),
                family=pol["family"],
                horizon=int(pol["horizon"]),
                action_dim=int(pol["action_dim"]),
                n_action_steps=int(pol["n_action_steps"]),
                num_steps=0,  # not negotiated
                control_hz=float(pol["control_hz"]),
                observation=obs,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise TransportError(f"the server's welcome is malformed: {type(e).__name__}: {e}") from None
        return cls(session=h["session"], spec=spec, action_shape=shape, server=h["server"], raw=h)

    @property
    def limits(self) -> dict[str, Any]:
        """The server's limits on costs a ``configure`` may ask for (``welcome.limits``: ``candidates``,
        ``particles``, ``num_steps``, ``chunk_s``, ``reward_backends``); ``{}`` from a server that sends none."""
        limits = self.raw.get("limits")
        return dict(limits) if isinstance(limits, dict) else {}

    def same_policy(self, other: Welcome) -> bool:
        keys = ("policy", "observation", "action")
        return all(self.raw.get(k) == other.raw.get(k) for k in keys)


class ChunkRequest:
    """A pending observe -> chunk request (a future). Thread-safe."""

    def __init__(self, step: int, start_step: int, deadline: float) -> None:
        self.step = step
        self.start_step = start_step
        self.deadline = deadline
        self.submitted = time.monotonic()
        self.completed: float | None = None
        self._future: concurrent.futures.Future[Chunk] = concurrent.futures.Future()

    def done(self) -> bool:
        return self._future.done()

    def result(self, timeout: float | None = None) -> Chunk:
        """The chunk; raises RequestTimeout, BusyError, RemoteError, ... when the request failed."""
        if timeout is None:  # the I/O thread settles every request by its deadline; a margin for scheduling
            timeout = max(0.0, self.deadline - time.monotonic()) + 1.0
        try:
            return self._future.result(timeout)
        except concurrent.futures.TimeoutError:
            raise RequestTimeout(f"observe of step {self.step}: no answer within the wait") from None

    def poll(self) -> Chunk | None:
        """The chunk if it is here, None if still pending; raises if the request failed."""
        return self.result(0) if self._future.done() else None

    def exception(self) -> BaseException | None:
        return self._future.exception(0) if self._future.done() else None

    @property
    def latency_s(self) -> float | None:
        return None if self.completed is None else self.completed - self.submitted

    def _settle(self, result: Any = None, error: BaseException | None = None) -> None:
        if self._future.done():
            return
        self.completed = time.monotonic()
        if error is not None:
            self._future.set_exception(error)
        else:
            self._future.set_result(result)


@dataclass(eq=False)
class _Pending:
    kind: str  # observe | configure | episode | ping
    header: dict[str, Any]
    arrays: dict[str, np.ndarray]
    request: Any  # ChunkRequest or a concurrent.futures.Future
    deadline: float
    session: str | None = None  # the session it was sent under (None: not sent)
    sent_at: float = 0.0
    resends: int = 0
    internal: bool = False  # a replayed configure or episode: no caller waits for it
    context: EpisodeContext | None = None  # episode: the context sent, then the latest update since


@dataclass
class ClientStats:
    sent: int = 0
    chunks: int = 0
    timeouts: int = 0
    busy: int = 0
    errors: int = 0
    late_replies: int = 0
    reconnects: int = 0  # welcomes after the first one
    socket_resets: int = 0
    resent: int = 0
    bad_replies: int = 0
    episodes: int = 0  # episodes the server started (replays included)
    contexts: int = 0  # context notifications sent
    executed: int = 0  # executed notifications sent
    notifications_dropped: int = 0  # context/executed not sent: no session, or the socket's queue was full
    notification_errors: int = 0  # context/executed the server refused

class PolicyClient:
    """DEALER client of a policy server. ``connect()`` first; ``close()`` (or ``with``) at the end.

    ``on_event(name, fields)`` (optional) is called from the I/O thread on ``connected``,
    ``disconnected``, ``reconnected`` (a new session after a failure), ``socket_reset``,
    ``spec_changed``, ``handshake_failed``, ``timeout``, ``episode_replayed`` /
    ``episode_replay_failed`` (the episode re-sent after a reconnect; fields ``code``, ``message`` on
    failure), ``context_error`` and ``executed_error`` (a notification the server refused: ``code``,
    ``message``, ``step`` for executed); keep it short.
    """

    def __init__(
        self,
        config: ClientConfig | None = None,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
        **overrides: Any,
    ) -> None:
        cfg = config or ClientConfig()
        for k, v in overrides.items():
            if not hasattr(cfg, k):
                raise TypeError(f"ClientConfig has no option {k!r}")
            setattr(cfg, k, v)
        self.config = cfg
        self.on_event = on_event
        self.limits = Limits(max_message_bytes=cfg.max_message_bytes)
        self.stats = ClientStats()
        self.context = zmq.Context()
        self._curve = client_keys(cfg.curve_keys, cfg.curve_name) if cfg.curve_keys else None
        self._seq = itertools.count(1)
        self._calls: deque[Callable[[], None]] = deque()
        self._wake_addr = f"inproc://policy-steer-client-{id(self)}"
        self._wake_lock = threading.Lock()
        self._wake_push: zmq.Socket | None = None
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()
        self._welcomed = threading.Condition()
        # I/O-thread state
        self._sock: zmq.Socket | None = None
        self._monitor: zmq.Socket | None = None
        self._poller: zmq.Poller | None = None
        self._pending: dict[int, _Pending] = {}
        self._waiting: list[_Pending] = []  # need a session (or a connection) before they can go
        self._needs_hello = True
        self._hello_seq: int | None = None
        self._hello_sent_at = 0.0
        self._last_rx = 0.0
        self._last_ping = 0.0
        self._settings: dict[str, Any] = {}  # the last configure (task, steer), replayed after a re-hello
        self._replay: EpisodeContext | None = None  # the episode to re-start after a re-hello (I/O thread)
        self._notes: OrderedDict[int, tuple[str, str | None, int | None]] = OrderedDict()  # seq -> kind, session, step
        self.episode: dict[str, Any] | None = None  # the last episode_started (episode, steer, strategies)
        self._first_welcome: Welcome | None = None
        self._welcome_count = 0
        self._fatal: TransportError | None = None
        self._connect_error: TransportError | None = None
        self.welcome: Welcome | None = None
        self.session: str | None = None

    # --- public API ------------------------------------------------------------------------------
    @property
    def spec(self) -> PolicySpec:
        if self._first_welcome is None:
            raise TransportError("not connected: call connect() first")
        return self._first_welcome.spec

    @property
    def connected(self) -> bool:
        """True while the client holds a session that the server has welcomed."""
        return self.session is not None

    def connect(self, timeout_s: float | None = None) -> Welcome:
        """Start the I/O thread, say hello, and wait for the welcome (spec negotiation).

        After a :class:`SpecChanged`, calling it again accepts the server's new policy.
        """
        if self._closing.is_set():
            raise ClientClosed("this client was closed")
        timeout_s = self.config.connect_timeout_s if timeout_s is None else timeout_s
        with self._welcomed:
            if self._first_welcome is not None and self._fatal is None:
                return self.welcome
            target = self._welcome_count + 1
            self._connect_error = None
        if self._thread is None:
            self._wake_pull = self.context.socket(zmq.PULL)
            self._wake_pull.bind(self._wake_addr)
            self._thread = threading.Thread(target=self._run, name="policy-steer-client", daemon=True)
            self._thread.start()
        else:
            self._call(self._reset_spec)
        deadline = time.monotonic() + timeout_s
        with self._welcomed:
            while self._welcome_count < target:
                if self._connect_error is not None:
                    raise self._connect_error
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RequestTimeout(
                        f"no welcome from {self.config.endpoint} within {timeout_s:g} s (is the server running?)"
                    )
                self._welcomed.wait(remaining)
            return self.welcome

    def submit_chunk(
        self,
        obs: Observation,
        step: int,
        start_step: int | None = None,
        prefix: np.ndarray | None = None,
        state_kind: str = "measured",
        timeout_s: float | None = None,
        prefix_start: int | None = None,
        prefix_committed: int | None = None,
    ) -> ChunkRequest:
        """Send an observe now; returns a :class:`ChunkRequest` that settles by its deadline.

        ``prefix`` [d, A]: the previous plan; by default actions committed before ``start_step``;
        ``prefix_start``/``prefix_committed`` place a longer plan that overlaps the chunk (docs/protocol.md)."""
        self._check_usable()
        start_step = step if start_step is None else int(start_step)
        if state_kind not in STATE_KINDS:
            raise ValidationError(f"state_kind must be one of {STATE_KINDS}, got {state_kind!r}")
        arrays = self._observation_arrays(obs, prefix)
        header: dict[str, Any] = {
            "type": OBSERVE,
            "step": int(step),
            "start_step": start_step,
            "state_kind": state_kind,
        }
        task = obs.get(TASK)
        if task is not None:
            header["task"] = str(task)
        if prefix is not None and prefix_start is not None:
            header["prefix_start"] = int(prefix_start)
        if prefix is not None and prefix_committed is not None:
            header["prefix_committed"] = int(prefix_committed)
        deadline = time.monotonic() + (self.config.timeout_s if timeout_s is None else timeout_s)
        request = ChunkRequest(int(step), start_step, deadline)
        self._call(lambda: self._start(_Pending(OBSERVE, header, arrays, request, deadline)))
        return request

    def request_chunk(
        self,
        obs: Observation,
        step: int,
        start_step: int | None = None,
        prefix: np.ndarray | None = None,
        state_kind: str = "measured",
        timeout_s: float | None = None,
        prefix_start: int | None = None,
        prefix_committed: int | None = None,
    ) -> Chunk:
        """Blocking observe -> chunk. Raises RequestTimeout, BusyError, RemoteError, SpecChanged."""
        return self.submit_chunk(obs, step, start_step, prefix, state_kind, timeout_s, prefix_start,
                                 prefix_committed).result()

    def configure(
        self, task: str | None = None, steer: dict[str, Any] | None = None, timeout_s: float | None = None
    ) -> dict[str, Any]:
        """Set this session's instruction and/or steering settings; returns the settings in force.

        The settings are remembered and sent again after every re-hello.
        """
        self._check_usable()
        header: dict[str, Any] = {"type": CONFIGURE}
        if task is not None:
            header["task"] = str(task)
        if steer is not None:
            header["steer"] = dict(steer)
        future: concurrent.futures.Future = concurrent.futures.Future()
        deadline = time.monotonic() + (self.config.timeout_s if timeout_s is None else timeout_s)
        self._call(lambda: self._start(_Pending(CONFIGURE, header, {}, future, deadline)))
        result = self._wait(future, deadline, "configure")
        if task is not None:
            self._settings["task"] = str(task)
        if steer is not None:
            merged = dict(self._settings.get("steer", {}))
            merged.update(steer)
            self._settings["steer"] = {k: v for k, v in merged.items() if v is not None}
        return result

    def start_episode(
        self, context: EpisodeContext, timeout_s: float | None = None, seed: int | None = None
    ) -> dict[str, Any]:
        """Start an episode in this session with ``context`` (``episode``); blocking.

        ``seed`` (if given) replaces ``context.seed`` (the server reseeds the session's noise with it).
        Returns ``{"session", "episode", "steer", "strategies"}`` from ``episode_started``. Raises
        ValidationError (nothing sent) for a context that fails its schema, :class:`RemoteError` with
        ``code`` ``context_required``, ``steer_unavailable``, ``steer_unsupported``,
        ``context_mismatch`` or ``bad_context`` when the server refuses it (its previous episode, if
        any, then goes on), RequestTimeout. The accepted context is re-sent after every reconnect.
        """
        self._check_usable()
        if seed is not None:
            context = dataclasses.replace(context, seed=int(seed))
        header = {"type": EPISODE, "context": context_to_wire(context)}
        future: concurrent.futures.Future = concurrent.futures.Future()
        deadline = time.monotonic() + (self.config.episode_timeout_s if timeout_s is None else timeout_s)
        self._call(lambda: self._start(_Pending(EPISODE, header, {}, future, deadline, context=context)))
        return self._wait(future, deadline, "episode")

    def update_context(self, context: EpisodeContext) -> None:
        """The scene now (``context`` notification); returns at once.

        The server applies it before this session's next observe. A refusal arrives as the
        ``context_error`` event. Raises ValidationError (nothing sent) for a context that fails its
        schema. Without a session (reconnecting) it is not sent, but the episode re-sent after the
        reconnect carries it.
        """
        self._check_usable()
        data = context_to_wire(context)
        self._call(lambda: self._notify_context(context, data))

    def report_executed(self, step: ExecutedStep) -> None:
        """What the robot executed at one control step (``executed`` notification); returns at once.

        Checked here: ``action`` and ``commanded`` [A], ``state`` (optional) shaped like the
        welcome's ``observation.state``, all finite (ValidationError, nothing sent). The server
        republishes it on its telemetry (topic ``executed``); a refusal arrives as ``executed_error``.
        Without a session (reconnecting) it is dropped (``stats.notifications_dropped``).
        """
        self._check_usable()
        header, arrays = self._executed_message(step)
        self._call(lambda: self._notify(EXECUTED, header, arrays, int(step.step)))

    def ping(self, timeout_s: float | None = None) -> float:
        """Round-trip time of a ping, in seconds."""
        self._check_usable(need_session=False)
        future: concurrent.futures.Future = concurrent.futures.Future()
        deadline = time.monotonic() + (self.config.timeout_s if timeout_s is None else timeout_s)
        t0 = time.monotonic()
        self._call(lambda: self._start(_Pending(PING, {"type": PING}, {}, future, deadline)))
        self._wait(future, deadline, "ping")
        return time.monotonic() - t0

    def close(self) -> None:
        """Stop the I/O thread; pending requests fail with ClientClosed."""
        if self._closing.is_set():
            return
        self._closing.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(5.0)
            self._wake_pull.close(linger=0)
        with self._wake_lock:
            if self._wake_push is not None:
                self._wake_push.close(linger=0)
                self._wake_push = None
        self.context.term()

    def __enter__(self) -> PolicyClient:
        if self._thread is None:
            self.connect()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # --- helpers in the caller's thread ---------------------------------------------------------
    def _check_usable(self, need_session: bool = True) -> None:
        if self._closing.is_set():
            raise ClientClosed("this client was closed")
        if self._fatal is not None:
            raise self._fatal
        if self._first_welcome is None:
            raise TransportError("not connected: call connect() first")

    def _wait(self, future: concurrent.futures.Future, deadline: float, what: str) -> Any:
        try:
            return future.result(max(0.0, deadline - time.monotonic()) + 1.0)
        except concurrent.futures.TimeoutError:
            raise RequestTimeout(f"{what}: no answer from {self.config.endpoint}") from None

    def _observation_arrays(self, obs: Observation, prefix: np.ndarray | None) -> dict[str, np.ndarray]:
        """The arrays of ``obs`` in the welcome's order, checked; floats are cast to the promised dtype."""
        arrays: dict[str, np.ndarray] = {}
        for key, feat in self.spec.observation.items():
            if key not in obs:
                raise ValidationError(
                    f"observation is missing {key!r} (the server expects {sorted(self.spec.observation)})"
                )
            arr = np.asarray(obs[key])
            want = np.dtype(feat.dtype)
            if arr.dtype != want:
                if arr.dtype.kind == "f" and want.kind == "f":
                    arr = arr.astype(want)
                else:
                    raise ValidationError(f"{key!r} is {arr.dtype}, the server expects {want} ({feat.dtype})")
            if arr.shape != tuple(feat.shape):
                raise ValidationError(f"{key!r} has shape {arr.shape}, the server expects {tuple(feat.shape)}")
            if feat.dtype in FLOAT_DTYPES and not np.isfinite(arr).all():
                raise ValidationError(f"{key!r} contains non-finite values")
            arrays[key] = np.ascontiguousarray(arr)
        if prefix is not None:
            p = np.ascontiguousarray(prefix, dtype=np.float32)
            a = self.spec.action_dim
            if p.ndim != 2 or p.shape[1] != a or not np.isfinite(p).all():
                raise ValidationError(f"prefix must be finite float [d, {a}], got {p.dtype} {p.shape}")
            arrays[PREFIX] = p
        return arrays

    def _executed_message(self, step: ExecutedStep) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The ``executed`` header and arrays for ``step``, checked against the welcome's spec."""
        if not isinstance(step, ExecutedStep):
            raise ValidationError(f"report_executed takes an ExecutedStep, got {type(step).__name__}")
        a = self.spec.action_dim
        arrays: dict[str, np.ndarray] = {}
        wants: dict[str, tuple[int, ...]] = {EXECUTED_ACTION: (a,), EXECUTED_COMMANDED: (a,)}
        values = {EXECUTED_ACTION: step.action, EXECUTED_COMMANDED: step.commanded}
        if step.state is not None:
            feat = self.spec.observation.get(OBS_STATE)
            if feat is None:
                raise ValidationError("executed: a state was given, but the server's policy takes no observation.state")
            wants[EXECUTED_STATE] = tuple(feat.shape)
            values[EXECUTED_STATE] = step.state
        for name, shape in wants.items():
            arr = np.ascontiguousarray(values[name], dtype=np.float32)
            if arr.shape != shape:
                raise ValidationError(f"executed: {name} has shape {arr.shape}, the server expects {shape}")
            if not np.isfinite(arr).all():
                raise ValidationError(f"executed: {name} holds non-finite values")
            arrays[name] = arr
        if (step.chunk_start_step is None) != (step.index is None):
            raise ValidationError(
                "executed: chunk_start_step and index are both set (a chunk row) or both None (a hold)"
            )
        if step.index is not None and int(step.index) < 0:
            raise ValidationError(f"executed: index must be >= 0, got {step.index}")
        header: dict[str, Any] = {
            "type": EXECUTED,
            "step": int(step.step),
            "chunk_start_step": None if step.chunk_start_step is None else int(step.chunk_start_step),
            "index": None if step.index is None else int(step.index),
            "safety": None if step.safety is None else str(step.safety),
        }
        if step.stamp:
            header["stamp"] = float(step.stamp)
        return header, arrays

    def _call(self, fn: Callable[[], None]) -> None:
        self._calls.append(fn)
        self._wake()

    def _wake(self) -> None:
        with self._wake_lock:
            if self._wake_push is None:
                self._wake_push = self.context.socket(zmq.PUSH)
                self._wake_push.setsockopt(zmq.LINGER, 0)
                self._wake_push.connect(self._wake_addr)
            try:
                self._wake_push.send(b"", zmq.NOBLOCK)
            except zmq.Again:
                pass

    def _event(self, name: str, **fields: Any) -> None:
        log.debug("client event %s %s", name, fields)
        if self.on_event is not None:
            try:
                self.on_event(name, fields)
            except Exception:
                log.exception("on_event callback failed")

    # --- the I/O thread ---------------------------------------------------------------------------
    def _open_socket(self) -> None:
        cfg = self.config
        sock = self.context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IMMEDIATE, 1)  # no queueing for a connection that is not up: requests wait for a welcome
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        sock.setsockopt(zmq.MAXMSGSIZE, self.limits.max_message_bytes + self.limits.max_header_bytes)
        sock.setsockopt(zmq.HEARTBEAT_IVL, int(cfg.heartbeat_s * 1000))
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, int(cfg.dead_after_s * 1000))
        if self._curve is not None:
            apply_curve_client(sock, *self._curve)
        # HANDSHAKE_SUCCEEDED (not CONNECTED): only then can a message go out on an IMMEDIATE socket
        monitor = sock.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_SUCCEEDED
            | zmq.EVENT_DISCONNECTED
            | zmq.EVENT_HANDSHAKE_FAILED_AUTH
            | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
        )
        sock.connect(cfg.endpoint)
        self._sock, self._monitor = sock, monitor
        self._poller = zmq.Poller()
        self._poller.register(sock, zmq.POLLIN)
        self._poller.register(monitor, zmq.POLLIN)
        self._poller.register(self._wake_pull, zmq.POLLIN)
        self._last_rx = time.monotonic()

    def _close_socket(self) -> None:
        if self._sock is not None:
            self._sock.disable_monitor()
            self._monitor.close(linger=0)
            self._sock.close(linger=0)
            self._sock = self._monitor = None

    def _run(self) -> None:
        self._open_socket()
        try:
            while not self._closing.is_set():
                now = time.monotonic()
                events = dict(self._poller.poll(self._poll_ms(now)))
                if self._wake_pull in events:
                    while True:
                        try:
                            self._wake_pull.recv(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                while self._calls:
                    self._calls.popleft()()
                if self._monitor in events:
                    self._on_monitor()
                if self._sock in events:
                    while self._sock is not None:
                        try:
                            frames = self._sock.recv_multipart(zmq.NOBLOCK, copy=False)
                        except zmq.Again:
                            break
                        self._on_message(frames)
                self._timers(time.monotonic())
        except Exception:
            log.exception("client I/O thread failed")
            self._fatal = TransportError("the client's I/O thread failed; see the log")
        finally:
            closed = ClientClosed("the client was closed")
            while self._calls:  # requests submitted just before close(): fail them, do not send them
                self._fatal = closed
                try:
                    self._calls.popleft()()
                except Exception:
                    log.exception("dropping a call at close")
            for p in list(self._pending.values()) + self._waiting:
                self._fail(p, closed)
            self._pending.clear()
            self._waiting.clear()
            self._close_socket()

    def _poll_ms(self, now: float) -> int:
        nxt = now + min(self.config.heartbeat_s, 0.1 if self._needs_hello else 1.0)
        for p in list(self._pending.values()) + self._waiting:
            nxt = min(nxt, p.deadline)
        return max(0, int((nxt - now) * 1000) + 1)

    def _send(self, header: dict[str, Any], arrays: dict[str, np.ndarray] | None = None) -> int | None:
        """Send with a fresh seq; None when no connection is up (IMMEDIATE) or the pipe is full."""
        seq = next(self._seq)
        header = dict(header, seq=seq)
        if self._sock is None:
            return None
        try:
            self._sock.send_multipart(encode(header, arrays), flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return None
        self.stats.sent += 1
        return seq

    def _start(self, p: _Pending) -> None:
        if self._fatal is not None:
            self._fail(p, self._fatal)
        elif p.kind == PING:
            seq = self._send(p.header)
            if seq is None:
                self._waiting.append(p)
            else:
                p.sent_at = time.monotonic()
                self._pending[seq] = p
        elif self.session is None:
            self._waiting.append(p)
        else:
            self._send_session_request(p)

    def _send_session_request(self, p: _Pending) -> None:
        seq = self._send(dict(p.header, session=self.session), p.arrays)
        if seq is None:
            self._waiting.append(p)
            return
        p.session = self.session
        p.sent_at = time.monotonic()
        self._pending[seq] = p

    def _notify(
        self, kind: str, header: dict[str, Any], arrays: dict[str, np.ndarray], step: int | None = None
    ) -> None:
        """Send a notification under the current session, or drop it (counted) when there is none."""
        if self._fatal is not None or self.session is None:
            self.stats.notifications_dropped += 1
            return
        seq = self._send(dict(header, session=self.session), arrays)
        if seq is None:
            self.stats.notifications_dropped += 1
            return
        if kind == CONTEXT:
            self.stats.contexts += 1
        else:
            self.stats.executed += 1
        self._notes[seq] = (kind, self.session, step)
        while len(self._notes) > self.config.max_tracked_notifications:
            self._notes.popitem(last=False)

    def _notify_context(self, context: EpisodeContext, data: dict[str, Any]) -> None:
        # the episode to replay after a reconnect follows the scene: the one in force, or one in flight
        if self._replay is not None:
            self._replay = context
        for p in list(self._pending.values()) + self._waiting:
            if p.kind == EPISODE:
                p.context = context
        self._notify(CONTEXT, {"type": CONTEXT, "context": data}, {})

    def _send_hello(self, now: float) -> None:
        seq = self._send({"type": HELLO, "client": self.config.name, "control_hz": float(self.config.control_hz)})
        if seq is not None:
            self._hello_seq = seq
            self._hello_sent_at = now

    def _timers(self, now: float) -> None:
        if self._closing.is_set():
            return
        if self._needs_hello and (self._hello_seq is None or now - self._hello_sent_at > self.config.hello_retry_s):
            self._send_hello(now)
        if now - self._last_ping >= self.config.heartbeat_s:
            self._last_ping = now
            self._send({"type": PING})
        # deadlines
        for seq, p in list(self._pending.items()):
            if now >= p.deadline:
                del self._pending[seq]
                self._timeout(p)
        for p in list(self._waiting):
            if now >= p.deadline:
                self._waiting.remove(p)
                self._timeout(p)
        if self._waiting and (self.session is not None or any(p.kind == PING for p in self._waiting)):
            waiting, self._waiting = self._waiting, []
            for p in waiting:
                self._start(p)
        # a half-open link: nothing heard for too long
        if now - self._last_rx > self.config.dead_after_s:
            self.stats.socket_resets += 1
            self._event("socket_reset", silent_s=round(now - self._last_rx, 3))
            self._lose_session()
            self._close_socket()
            self._open_socket()

    def _timeout(self, p: _Pending) -> None:
        if p.internal:
            return
        self.stats.timeouts += 1
        what = f"observe of step {p.request.step}" if p.kind == OBSERVE else p.kind
        self._event("timeout", what=what)
        self._fail(p, RequestTimeout(f"{what}: no answer from {self.config.endpoint} before the deadline"))

    def _fail(self, p: _Pending, error: BaseException) -> None:
        if isinstance(p.request, ChunkRequest):
            p.request._settle(error=error)
        elif not p.request.done():
            p.request.set_exception(error)

    def _lose_session(self) -> None:
        """The session is gone (or unknown): hold session requests until the next welcome."""
        if self.session is not None:
            self._event("disconnected", session=self.session)
        self.session = None
        self._needs_hello = True
        self._hello_seq = None
        for seq, p in list(self._pending.items()):
            if p.kind != PING:
                del self._pending[seq]
                self._requeue(p)

    def _requeue(self, p: _Pending) -> None:
        if p.internal:
            return  # replayed configure: it will be replayed again
        if p.resends >= self.config.max_resends:
            self._fail(p, TransportError(f"{p.kind}: given up after {p.resends} re-sends across reconnects"))
            return
        p.resends += 1
        self.stats.resent += 1
        self._waiting.append(p)

    def _reset_spec(self) -> None:
        self._first_welcome = None
        self._fatal = None
        self._replay = None  # another policy: the caller starts a new episode
        self._lose_session()

    def _on_monitor(self) -> None:
        while self._monitor is not None:
            try:
                evt = zmq.utils.monitor.recv_monitor_message(self._monitor, zmq.NOBLOCK)
            except zmq.Again:
                break
            kind = evt["event"]
            if kind == zmq.EVENT_DISCONNECTED:
                self._lose_session()
            elif kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._last_rx = time.monotonic()
                if self.session is not None:
                    self._lose_session()  # a new connection: the protocol says hello again
                if self._hello_seq is None or self._first_welcome is not None:
                    self._send_hello(time.monotonic())
            elif kind in (zmq.EVENT_HANDSHAKE_FAILED_AUTH, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL):
                why = (
                    "refused this client's CURVE key"
                    if kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH
                    else "failed the security handshake (CURVE on one side only, or a wrong server key?)"
                )
                self._event("handshake_failed", endpoint=self.config.endpoint, why=why)
                if self._first_welcome is None:
                    self._set_connect_error(TransportError(f"the server at {self.config.endpoint} {why}"))

    def _on_message(self, frames: list[zmq.Frame]) -> None:
        self._last_rx = time.monotonic()
        try:
            msg = decode(frames, accept=CLIENT_ACCEPTS, limits=self.limits)
        except ProtocolError as e:
            self.stats.bad_replies += 1
            log.warning("bad message from the server: %s", e)
            p = self._pending.pop(e.re, None) if e.re is not None else None
            if p is not None:
                self._fail(p, TransportError(f"the server sent a malformed reply: {e}"))
            return
        kind = msg.type
        if kind == PING:
            self._send({"type": PONG, "re": msg.seq})
            return
        if kind == WELCOME:
            self._on_welcome(msg)
            return
        re = msg.get("re")
        p = self._pending.pop(re, None) if re is not None else None
        if kind == ERROR and re == self._hello_seq and re is not None:
            self._on_hello_error(msg)
            return
        if p is None and kind == ERROR and re in self._notes:
            self._on_notification_error(self._notes.pop(re), msg)
            return
        if p is None:
            if kind != PONG:  # pongs of heartbeats have no pending entry
                self.stats.late_replies += 1
            return
        if self._last_rx > p.deadline:  # read after its deadline (this thread was late): a timeout, not a chunk
            self.stats.late_replies += 1
            self._timeout(p)
            return
        if kind == ERROR:
            self._on_error(p, msg)
        elif kind == CHUNK and p.kind == OBSERVE:
            self._on_chunk(p, msg)
        elif kind == CONFIGURED and p.kind == CONFIGURE:
            if not p.request.done():
                p.request.set_result(dict(msg.get("steer")))
        elif kind == EPISODE_STARTED and p.kind == EPISODE:
            self._on_episode_started(p, msg)
        elif kind == PONG and p.kind == PING:
            if not p.request.done():
                p.request.set_result(True)
        else:
            self._fail(p, TransportError(f"the server answered {p.kind} with {kind}"))

    def _on_welcome(self, msg: Message) -> None:
        if msg.get("re") != self._hello_seq:
            return  # the answer to an older hello; a newer one is on its way
        try:
            welcome = Welcome.from_message(msg)
        except TransportError as e:
            self._set_connect_error(e)
            return
        with self._welcomed:
            if self._first_welcome is not None and not welcome.same_policy(self._first_welcome):
                err = SpecChanged(
                    f"the server at {self.config.endpoint} now serves another policy ({welcome.spec.name}); call connect() to accept it"
                )
                self._fatal = err
                self._event("spec_changed", policy=welcome.spec.name)
                for q in list(self._pending.values()) + self._waiting:
                    self._fail(q, err)
                self._pending.clear()
                self._waiting.clear()
                self._needs_hello = False
                self._welcomed.notify_all()
                return
            first = self._first_welcome is None
            if first:
                self._first_welcome = welcome
            else:
                self.stats.reconnects += 1
            self.welcome = welcome
            self.session = welcome.session
            self._needs_hello = False
            self._welcome_count += 1
            self._welcomed.notify_all()
        self._event("connected" if first else "reconnected", session=welcome.session)
        if self._settings and not first:  # replay configure before anything else of the session
            header = {"type": CONFIGURE, **self._settings}
            self._send_session_request(
                _Pending(
                    CONFIGURE,
                    header,
                    {},
                    concurrent.futures.Future(),
                    time.monotonic() + self.config.timeout_s,
                    internal=True,
                )
            )
        # then the episode (a new session has none), unless the caller's own `episode` is about to go
        if self._replay is not None and not first and not any(p.kind == EPISODE for p in self._waiting):
            self._send_session_request(
                _Pending(
                    EPISODE,
                    {"type": EPISODE, "context": context_to_wire(self._replay)},
                    {},
                    concurrent.futures.Future(),
                    time.monotonic() + self.config.episode_timeout_s,
                    internal=True,
                    context=self._replay,
                )
            )
        waiting, self._waiting = self._waiting, []
        for p in waiting:
            self._start(p)

    def _on_hello_error(self, msg: Message) -> None:
        err = RemoteError(msg.get("code"), msg.get("message"))
        if self._first_welcome is None:
            self._set_connect_error(err)
        log.warning("hello refused: %s (retrying)", err)
        self._hello_sent_at = time.monotonic()  # retry after hello_retry_s

    def _set_connect_error(self, err: TransportError) -> None:
        with self._welcomed:
            self._connect_error = err
            self._welcomed.notify_all()

    def _on_episode_started(self, p: _Pending, msg: Message) -> None:
        strategies = msg.get("strategies")
        if not all(isinstance(n, str) for n in strategies):
            self.stats.bad_replies += 1
            self._fail(p, TransportError("episode_started: 'strategies' must be a list of names"))
            return
        result = {
            "session": msg.get("session"),
            "episode": msg.get("episode"),
            "steer": dict(msg.get("steer")),
            "strategies": list(strategies),
            "wants_prefix": bool(msg.get("wants_prefix", False)),
        }
        self.stats.episodes += 1
        self._replay = p.context  # the episode in force now: re-sent after a reconnect
        self.episode = result
        if p.internal:
            self._event("episode_replayed", **result)
        elif not p.request.done():
            p.request.set_result(result)

    def _on_notification_error(self, note: tuple[str, str | None, int | None], msg: Message) -> None:
        kind, session, step = note
        code, message = msg.get("code"), msg.get("message")
        self.stats.notification_errors += 1
        if code == NO_SESSION and session == self.session:
            self._lose_session()  # the server no longer knows our session: hello again (and replay)
        fields: dict[str, Any] = {"code": code, "message": message}
        if step is not None:
            fields["step"] = step
        self._event(f"{kind}_error", **fields)

    def _on_error(self, p: _Pending, msg: Message) -> None:
        code, message = msg.get("code"), msg.get("message")
        if p.internal and p.kind == EPISODE:
            self.stats.errors += 1
            self._event("episode_replay_failed", code=code, message=message)
            return
        if code == NO_SESSION and not p.internal:
            if p.session == self.session:
                self._lose_session()  # the server no longer knows our session: hello again
            self._requeue(p)
            return
        if code == BUSY:
            self.stats.busy += 1
            self._fail(p, BusyError(code, message))
        else:
            self.stats.errors += 1
            self._fail(p, RemoteError(code, message))

    def _on_chunk(self, p: _Pending, msg: Message) -> None:
        req: ChunkRequest = p.request
        actions = msg.arrays.get(ACTIONS)
        want = self.welcome.action_shape if self.welcome else None
        problem = None
        if actions is None:
            problem = "no 'actions' array"
        elif actions.dtype.str != "<f4" or actions.shape != want:
            problem = f"actions are {actions.dtype.str} {list(actions.shape)}, welcome promised <f4 {list(want)}"
        elif not np.isfinite(actions).all():
            problem = "non-finite actions"
        elif msg.get("start_step") != req.start_step:
            problem = f"chunk starts at step {msg.get('start_step')}, the request asked for {req.start_step}"
        if problem is not None:
            self.stats.bad_replies += 1
            req._settle(error=TransportError(f"chunk for step {req.step} rejected: {problem}"))
            return
        self.stats.chunks += 1
        req._settle(Chunk(actions=np.array(actions), start_step=req.start_step, info=dict(msg.get("info"))))
