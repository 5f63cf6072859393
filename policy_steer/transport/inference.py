"""The inference thread: runs the policy for queued jobs, off the socket thread.

The socket thread keeps answering ``ping`` (and rejecting bad messages) while a chunk is computed;
torch releases the GIL inside its kernels, so that thread gets time even on a busy CPU.

What the server needs from a policy is declared, never looked up by name: :class:`ServedPolicy`
(a :class:`~policy_steer.steered_policy.SteeredPolicy`, the fixed-chunk test policy, ...):

- ``spec``: what ``welcome`` promises;
- ``configure(task=..., steer=...) -> dict``: the instruction and the whole steering map of the
  session whose job runs next (``{}``: the policy's defaults); returns the settings in force. Raises
  :class:`~policy_steer.errors.SteeringRefused` (its ``code`` goes on the wire) or another
  ConfigError/ValueError (``bad_header``) and then changes nothing. Called only when the settings
  differ from those in force;
- ``start_episode(context, seed=None) -> dict``: a new episode with that
  :class:`~policy_steer.types.EpisodeContext` (history cleared, noise reseeded when ``context.seed``
  is set); the dict names the strategies in force under ``"strategies"``. Raises SteeringRefused and
  changes nothing when a strategy cannot act with the context;
- ``update_context(context)``: the scene changed mid-episode;
- ``predict_chunk(obs, prefix=None, start_step=None) -> Chunk``: ``info["strategies"]`` maps each
  strategy to whether it acted, ``info["steer"]`` holds their figures;
- ``export_session_state() -> Any`` / ``import_session_state(state)``: everything per episode
  (history, noise stream, context, the strategies' episode state), so sessions share one model
  without mixing their episodes. The state the policy holds when the worker is built (no episode
  running) is what every new session starts from.

Sessions and episodes (``docs/protocol.md``): before one of a session's jobs runs, its settings are
put in force and its state imported (the previous session's exported). A session's first
``observe`` without an ``episode`` starts an implicit episode with an empty context (the instruction
from the observe's or the configured ``task``); a strategy that refuses that makes the observe fail
with the refusal's code: a chunk is never computed unsteered in silence. In an implicit episode an
``observe`` whose ``step`` is lower than the previous one starts a new implicit episode (v1's rule);
an explicit episode ends only with the next ``episode``.

Limits (:class:`~policy_steer.transport.limits.ServerLimits`): the socket thread has checked a
``configure``'s own values; here the settings the policy reports in force after it (its defaults
merged in) and the number of chunks it samples per observe (the policy's ``candidates``, when it has
one) are checked too, and a refusal puts the session's previous settings back. Every chunk's compute
time is measured against ``max_chunk_s``: a chunk over the budget is still delivered (``info`` says
``over_budget``), and when the session chose its steering settings itself, its next ``observe`` is
refused ``over_limit`` until it sends a ``configure`` (cheaper settings); the server's own defaults
are the operator's choice and are only logged.

Stopping: :meth:`InferenceWorker.abandon` ends a chunk in flight at the policy's next Python
instruction (between two torch calls) by raising :class:`ChunkAbandoned` in this thread, so the
process can finalize without a thread inside torch (see :meth:`PolicyServer.stop`).

Batching (``max_batch > 1`` and the policy is also a :class:`BatchPolicy`): queued observes of
different sessions with the same steering settings run as one ``predict_chunks(items)`` call. Each
item carries its session's state (``BatchItem.state``: ``export_session_state()`` with the session's
episode started, through ``start_episode`` as without batching), and the policy leaves the state
after the chunk there; ``new_episode`` and ``context`` say the same for a policy that reads them, and
``end_session(session_id)`` says when a session is gone. The instruction travels in each
observation's ``task``, and ``configure`` receives ``task=None``.

The batching window (``batch_window_s``): when fewer than ``max_batch`` compatible observes are
queued, the worker waits for more for at most that long after it takes the first one, and only when
another session is open that is not in the batch yet (a lone robot never waits) and the settings in
force can share a call (``BatchPolicy.shares_runs``; otherwise observes run one by one). So no
observe is delayed by batching more than the window. :class:`WindowCounters` count what happened.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from policy_steer.errors import ConfigError, PolicySteerError, SteeringRefused
from policy_steer.transport.codec import encode, to_wire
from policy_steer.transport.errors import (
    BAD_ARRAY,
    BAD_CONTEXT,
    BAD_HEADER,
    INTERNAL,
    NO_EPISODE,
    NO_SESSION,
    OVER_LIMIT,
    ProtocolError,
)
from policy_steer.transport.limits import ServerLimits
from policy_steer.transport.messages import ACTIONS, CHUNK, CONFIGURED, EPISODE_STARTED
from policy_steer.transport.scheduler import (
    CONFIGURE_JOB,
    CONTEXT_JOB,
    EPISODE_JOB,
    OBSERVE_JOB,
    Job,
    JobQueue,
)
from policy_steer.transport.ratelog import RateLimitedLog
from policy_steer.transport.sessions import Session
from policy_steer.types import RECORDING_ONLY_INFO, STAMP, STEP, TASK, Chunk, EpisodeContext, PolicySpec

log = logging.getLogger(__name__)


@runtime_checkable
class ServedPolicy(Protocol):
    """What the server runs (see the module docstring for each member's contract)."""

    spec: PolicySpec
    wants_prefix: bool  # its steering reads the previous plan (told to the robot in `episode_started`)
    candidates: int  # samples drawn per observe under the settings in force (checked against the limits)
    folder: str | None  # the checkpoint folder it was loaded from (the default verifier root), if any

    def predict_chunk(
        self,
        obs: dict[str, Any],
        prefix: np.ndarray | None = None,
        start_step: int | None = None,
        prefix_start: int | None = None,
        prefix_committed: int | None = None,
    ) -> Chunk: ...

    def configure(self, task: str | None = None, steer: dict[str, Any] | None = None) -> dict[str, Any]: ...

    def start_episode(self, context: EpisodeContext | None = None, seed: int | None = None) -> dict[str, Any]: ...

    def update_context(self, context: EpisodeContext) -> None: ...

    def export_session_state(self) -> Any: ...

    def import_session_state(self, state: Any) -> None: ...


@dataclass
class BatchItem:
    """One observe of a batch: whose it is, what it saw, where its chunk starts, its episode, its state."""

    session: str
    obs: dict[str, Any]
    prefix: np.ndarray | None
    start_step: int
    new_episode: bool
    context: EpisodeContext | None = None
    episode: int = 0
    prefix_start: int | None = None  # as predict_chunk's (None: the prefix ends before start_step)
    prefix_committed: int | None = None
    # The session's per-episode state (export_session_state), its episode started; predict_chunks
    # leaves the state after the chunk here (None: the policy's own state is the session's).
    state: Any = None


@runtime_checkable
class BatchPolicy(Protocol):
    """A policy that can compute several sessions' chunks in one call (``max_batch > 1``)."""

    # Whether the settings in force let observes share a call (False: the worker runs them one by
    # one, without waiting for a batching window; e.g. a steering strategy that is not batchable).
    shares_runs: bool

    def predict_chunks(self, items: list[BatchItem]) -> list[Chunk]: ...

    def end_session(self, session_id: str) -> None: ...


SERVED_MEMBERS = (
    "spec",
    "predict_chunk",
    "configure",
    "start_episode",
    "update_context",
    "export_session_state",
    "import_session_state",
)


@dataclass
class WindowCounters:
    """What the batching window did, per observe that started a batch (the worker's ``window``)."""

    waited: int = 0  # another open session could join: waited up to the window
    filled: int = 0  # ... and the batch reached max_batch before the window ended
    alone: int = 0  # every open session was already in the batch: no wait
    unshared: int = 0  # the settings in force cannot share a call (shares_runs false): no wait, run alone


def check_served_policy(policy: Any) -> None:
    """ConfigError naming the members of the ServedPolicy contract that ``policy`` lacks."""
    if isinstance(policy, ServedPolicy):
        return
    missing = sorted(set(SERVED_MEMBERS) - set(dir(policy)))
    raise ConfigError(
        f"{type(policy).__name__} cannot be served: it lacks {', '.join(missing)} "
        "(the ServedPolicy contract in policy_steer/transport/inference.py)"
    )


class Outgoing:
    """A reply for the socket thread: frames for ``identity``, optional telemetry, figures for metrics."""

    __slots__ = ("identity", "frames", "telemetry", "server_ms", "kind")

    def __init__(
        self,
        identity: bytes,
        frames: list[Any],
        telemetry: tuple[str, dict, dict] | None = None,
        server_ms: float | None = None,
        kind: str = "",
    ) -> None:
        self.identity = identity
        self.frames = frames
        self.telemetry = telemetry
        self.server_ms = server_ms
        self.kind = kind


def error_frames(seq: int, code: str, message: str, re: int | None, version: int | None = None) -> list[Any]:
    header: dict[str, Any] = {"type": "error", "seq": seq, "code": code, "message": message[:1000]}
    if re is not None:
        header["re"] = re
    return encode(header) if version is None else encode(header, version=version)


def _refusal(e: SteeringRefused, what: str, re: int) -> ProtocolError:
    return ProtocolError(e.code, f"{what} refused: {e.reason}", re)


class ChunkAbandoned(BaseException):
    """Raised inside the inference thread by :meth:`InferenceWorker.abandon` (a BaseException: a
    policy's ``except Exception`` does not swallow it)."""


class InferenceWorker(threading.Thread):
    """Takes jobs from ``queue`` one at a time and hands replies to ``post``."""

    def __init__(
        self,
        policy: ServedPolicy,
        queue: JobQueue,
        post: Callable[[Outgoing], None],
        next_seq: Callable[[], int],
        max_batch: int = 1,
        limits: ServerLimits | None = None,
        errors_log: RateLimitedLog | None = None,
        batch_window_s: float = 0.0,
        open_sessions: Callable[[], int] | None = None,
    ) -> None:
        """``batch_window_s`` and ``open_sessions`` (how many sessions are open now) drive the batching
        window (module docstring); without ``open_sessions`` every wait is taken as possibly useful."""
        super().__init__(name="policy-steer-inference", daemon=True)
        if batch_window_s < 0:
            raise ConfigError(f"the batching window must be >= 0 s, got {batch_window_s}")
        self.batch_window_s = float(batch_window_s)
        self.open_sessions = open_sessions
        self.window = WindowCounters()
        self.limits = limits or ServerLimits()
        self.errors_log = errors_log or RateLimitedLog(log)
        self.busy = False  # a job is being run (abandon() only interrupts then)
        self.abandoned = False
        check_served_policy(policy)
        self.policy = policy
        self.spec = policy.spec
        self.queue = queue
        self.post = post
        self.next_seq = next_seq
        self.batcher: BatchPolicy | None = policy if isinstance(policy, BatchPolicy) and max_batch > 1 else None
        self.max_batch = max_batch if self.batcher is not None else 1
        if max_batch > 1 and self.batcher is None:
            log.warning(
                "max_batch=%d ignored: the policy (%s) is not a BatchPolicy (predict_chunks, end_session); "
                "observes run one at a time",
                max_batch,
                type(policy).__name__,
            )
        # A session with no episode starts from the state the policy is in now (nothing started).
        self.blank = policy.export_session_state()
        self.active: Session | None = None
        self.applied: tuple[str | None, dict[str, Any]] | None = None  # (task, steer) given to configure
        self.in_force: dict[str, Any] = {}  # what configure returned for them
        self.batch_sizes: list[int] = []
        self._known: dict[str, Session] = {}  # sessions the batching policy has seen
        self.recording = None  # serve --record_bag/--foxglove: a policy_steer.recording.serve.ServerRecording
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()

    def abandon(self) -> bool:
        """Stop the job in flight: :class:`ChunkAbandoned` is raised in this thread at its next Python
        instruction (a call inside torch finishes first). Only while stopping and running a job (an idle
        thread leaves by itself within its queue's poll); True if it was raised."""
        if not self._stopping.is_set() or not self.busy or not self.is_alive() or self.ident is None:
            return False
        self.abandoned = True
        n = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.ident), ctypes.py_object(ChunkAbandoned))
        return n == 1

    def run(self) -> None:
        try:
            self._loop()
        except ChunkAbandoned:
            log.info("the chunk in flight was abandoned: the server is stopping")

    def _loop(self) -> None:
        while not self._stopping.is_set():
            job = self.queue.take(timeout_s=0.2)
            if self.batcher is not None:
                self._forget_closed_sessions()
            if job is None:
                continue
            jobs = [job]
            self.busy = True
            try:
                if job.session.closed:
                    raise ProtocolError(
                        NO_SESSION, "the session closed (expired or replaced by a new hello) before its turn", job.seq
                    )
                if job.kind == CONFIGURE_JOB:
                    self._configure(job)
                elif job.kind == EPISODE_JOB:
                    self._episode(job)
                elif job.kind == CONTEXT_JOB:
                    self._context(job)
                elif self.batcher is not None:
                    jobs += self._gather(job)  # in place: the handlers below answer every job taken
                    self._observe_batch(jobs)
                else:
                    self._observe(job)
            except ProtocolError as e:
                for j in jobs:
                    self._post_error(j, e.code, e.message)
            except SteeringRefused as e:  # from a call not expected to refuse (predict_chunk): its code still
                for j in jobs:
                    self._post_error(j, e.code, f"{job.kind} refused: {e.reason}")
            except Exception as e:  # never let a policy bug end the thread
                code = INTERNAL
                if isinstance(e, PolicySteerError):
                    code = {OBSERVE_JOB: BAD_ARRAY, CONFIGURE_JOB: BAD_HEADER}.get(job.kind, BAD_CONTEXT)
                what = "the policy refused the observation" if job.kind == OBSERVE_JOB else f"{job.kind} failed"
                self.errors_log.log(
                    f"{job.kind} job: {type(e).__name__}",
                    logging.ERROR if code == INTERNAL else logging.WARNING,
                    f"{job.kind} job of session {job.session.id} failed ({code}): {type(e).__name__}: {str(e)[:300]}",
                    exc_info=code == INTERNAL,
                )
                for j in jobs:
                    self._post_error(j, code, f"{what}: {type(e).__name__}: {e}")
            finally:
                self.busy = False
                for j in jobs:
                    j.frames = []  # release the received buffers now

    def _post_error(self, job: Job, code: str, message: str) -> None:
        self.post(Outgoing(job.identity, error_frames(self.next_seq(), code, message, job.seq), kind=code))

    # --- sessions ---------------------------------------------------------------------------------
    def _settings_of(self, session: Session, task: str | None = None, steer: dict[str, Any] | None = None):
        """(task, steer) as configure gets them; batching policies get task=None (it travels per observation)."""
        task = session.task if task is None else task
        return (None if self.batcher is not None else task), dict(session.steer if steer is None else steer)

    def _activate(self, session: Session) -> None:
        """Make ``session``'s settings and per-episode state the policy's before one of its jobs runs.

        New settings are put in force on the empty state (no episode, so nothing is re-checked or
        reset), then the session's own state is imported on top.
        """
        wanted = self._settings_of(session)
        if self.active is session and self.applied == wanted:
            return
        if self.active is not None and not self.active.closed:
            self.active.policy_state = self.policy.export_session_state()
        self.active = None
        if self.applied != wanted:
            self.applied = None  # unknown until configure returns
            self.policy.import_session_state(self.blank)
            self.in_force = dict(self.policy.configure(task=wanted[0], steer=dict(wanted[1])))
            self.applied = wanted
        self.policy.import_session_state(self.blank if session.policy_state is None else session.policy_state)
        self.active = session

    def _instruction(self, job: Job) -> str | None:
        """The observation's instruction: the observe's ``task``, else the configured one, else the context's."""
        s = job.session
        if job.task is not None:
            return job.task
        if s.task is not None:
            return s.task
        return None if s.context is None else s.context.instruction

    def _ensure_episode(self, job: Job) -> bool:
        """Start the implicit episode an observe needs (True when one started); refusals carry their code."""
        s = job.session
        restart = s.episode == 0 or (not s.explicit and s.last_step is not None and job.step < s.last_step)
        if not restart:
            return False
        context = EpisodeContext(instruction=self._instruction(job))
        try:
            self.policy.start_episode(context)
        except SteeringRefused as e:
            raise ProtocolError(
                e.code,
                f"observe refused: the session has no episode context and {e.reason}; "
                "send `episode` with the context first (docs/protocol.md)",
                job.seq,
            ) from None
        s.episode += 1
        s.explicit = False
        s.context = None  # none was sent: later observes take no instruction from this one
        s.last_step = None
        event = {"session": s.id, "event": "episode_started", "episode": s.episode, "implicit": True}
        self.post(Outgoing(job.identity, [], telemetry=("event", event, {}), kind="telemetry"))
        return True

    # --- jobs ---------------------------------------------------------------------------------------
    def _configure(self, job: Job) -> None:
        session = job.session
        task = job.task if job.task is not None else session.task
        steer = dict(session.steer)
        for k, v in (job.steer or {}).items():  # a key set to None returns it to its default
            if v is None:
                steer.pop(k, None)
            else:
                steer[k] = v
        self._activate(session)  # the session's episode, under its settings so far
        wanted = self._settings_of(session, task, steer)
        try:
            in_force = dict(self.policy.configure(task=wanted[0], steer=dict(wanted[1])))
            # what the policy runs now, its own defaults merged in, within the operator's limits
            self.limits.check_in_force(in_force, self.policy.candidates, job.seq)
        except ProtocolError:
            self.applied = None  # put the session's old settings back in force before its next job
            raise
        except SteeringRefused as e:
            self.applied = None
            raise _refusal(e, "configure", job.seq) from None
        except (PolicySteerError, ValueError, KeyError, TypeError, ArithmeticError) as e:
            self.applied = None  # a value the policy cannot take: bad input, not a server failure
            raise ProtocolError(BAD_HEADER, f"configure: steer refused: {type(e).__name__}: {e}", job.seq) from None
        except Exception:
            self.applied = None
            raise
        session.task, session.steer = task, steer
        session.over_budget = None  # new settings: the chunk budget judges them afresh
        self.applied, self.in_force = wanted, in_force
        header = {
            "type": CONFIGURED,
            "seq": self.next_seq(),
            "re": job.seq,
            "session": session.id,
            "steer": to_wire(self.in_force),
        }
        self.post(Outgoing(job.identity, encode(header), kind=CONFIGURED))

    def _episode(self, job: Job) -> None:
        session = job.session
        self._activate(session)
        try:
            started = self.policy.start_episode(job.context)
        except SteeringRefused as e:
            raise _refusal(e, "episode", job.seq) from None
        except PolicySteerError as e:
            raise ProtocolError(BAD_CONTEXT, f"episode: {e}", job.seq) from None
        strategies = started.get("strategies") if isinstance(started, dict) else None
        if not isinstance(strategies, (list, tuple)) or not all(isinstance(n, str) for n in strategies):
            raise ProtocolError(
                INTERNAL, f"start_episode returned {started!r:.200}; it must name the strategies in force", job.seq
            )
        session.episode += 1
        session.explicit = True
        session.context = job.context
        session.last_step = None
        if self.recording is not None:
            self.recording.episode(session.id, session.episode, job.context)
        header = {
            "type": EPISODE_STARTED,
            "seq": self.next_seq(),
            "re": job.seq,
            "session": session.id,
            "episode": session.episode,
            "steer": to_wire(self.in_force),
            "strategies": [str(n) for n in strategies],
            "wants_prefix": bool(self.policy.wants_prefix),
        }
        event = {"session": session.id, "event": "episode_started", "episode": session.episode,
                 "implicit": False, "strategies": header["strategies"]}
        self.post(Outgoing(job.identity, encode(header), telemetry=("event", event, {}), kind=EPISODE_STARTED))

    def _context(self, job: Job) -> None:
        session = job.session
        if session.episode == 0:
            raise ProtocolError(
                NO_EPISODE, f"context: session {session.id} has no episode yet; send `episode` first", job.seq
            )
        self._activate(session)
        try:
            self.policy.update_context(job.context)
        except SteeringRefused as e:
            raise _refusal(e, "context", job.seq) from None
        except PolicySteerError as e:
            raise ProtocolError(BAD_CONTEXT, f"context: {e}", job.seq) from None
        session.context = job.context

    def _observation(self, job: Job) -> dict[str, Any]:
        obs: dict[str, Any] = {k: np.array(v) for k, v in job.arrays.items()}  # writable, owned by the policy
        obs[STEP] = job.step
        obs[STAMP] = job.stamp
        task = self._instruction(job)
        if task is not None:
            obs[TASK] = task
        return obs

    def _check_budget(self, job: Job) -> None:
        """An observe of a session whose own settings broke the chunk budget is refused until it configures."""
        if job.session.over_budget is not None:
            raise ProtocolError(
                OVER_LIMIT,
                f"observe refused: {job.session.over_budget}; configure cheaper steering settings "
                "(any configure lifts this)",
                job.seq,
            )

    def _judge_budget(self, sessions: list[Session], seconds: float) -> bool:
        """After a chunk: True when it broke the budget; sessions that chose their settings are marked."""
        budget = self.limits.max_chunk_s
        if seconds <= budget:
            return False
        for s in sessions:
            if s.steer:  # settings the client chose
                s.over_budget = (
                    f"the session's last chunk took {seconds:.2f} s to compute, above this server's chunk "
                    f"budget of {budget:g} s (welcome.limits.chunk_s) under its steering settings {to_wire(s.steer)}"
                )
        chosen = [s for s in sessions if s.steer]
        self.errors_log.log(
            "over budget" if chosen else "over budget (server defaults)",
            logging.WARNING,
            f"a chunk took {seconds:.2f} s, above the chunk budget of {budget:g} s "
            + (f"(session {chosen[0].id}, settings {to_wire(chosen[0].steer)}: its next observe is refused)"
               if chosen else "under the server's default settings: lower them or raise --max_chunk_s"),
        )
        return True

    def _observe(self, job: Job) -> None:
        session = job.session
        self._check_budget(job)
        self._activate(session)
        self._ensure_episode(job)
        obs = self._observation(job)
        prefix = None if job.prefix is None else np.array(job.prefix)
        t0 = time.monotonic()
        chunk = self.policy.predict_chunk(
            obs, prefix=prefix, start_step=job.start_step, prefix_start=job.prefix_start,
            prefix_committed=job.prefix_committed,
        )
        t1 = time.monotonic()
        session.last_step = job.step
        if self.recording is not None and isinstance(chunk, Chunk):  # queued for its writer: never waits
            self.recording.observed(session.id, session.episode, obs, chunk, t1 - job.received)
        over = self._judge_budget([session], t1 - t0)
        self._reply_chunk(job, chunk, t0, t1, over_budget=over)

    def _gather(self, first: Job) -> list[Job]:
        """Observes of other sessions to share ``first``'s call (the batching window, module docstring)."""
        self._activate(first.session)  # its settings in force: can they share a call?
        if not self.batcher.shares_runs:
            self.window.unshared += 1
            return []
        steer = first.session.steer
        compatible = lambda j: j.session.steer == steer and not j.session.closed  # noqa: E731
        more = self.queue.take_more_observes([first], self.max_batch - 1, compatible)
        if len(more) + 1 >= self.max_batch or self.batch_window_s <= 0:
            return more
        if self.open_sessions is not None and self.open_sessions() <= 1 + len(more):
            self.window.alone += 1  # nobody else could send one within the window
            return more
        self.window.waited += 1
        more += self.queue.take_more_observes(
            [first, *more], self.max_batch - 1 - len(more), compatible, until=time.monotonic() + self.batch_window_s
        )
        if len(more) + 1 >= self.max_batch:
            self.window.filled += 1
        return more

    def _observe_batch(self, jobs: list[Job]) -> None:
        ready: list[tuple[Job, BatchItem]] = []
        for job in jobs:  # every job of the batch has the same steer settings
            s = job.session
            try:
                self._check_budget(job)
                self._activate(s)
                new_episode = self._ensure_episode(job)
            except ProtocolError as e:
                self._post_error(job, e.code, e.message)
                continue
            self._known[s.id] = s
            prefix = None if job.prefix is None else np.array(job.prefix)
            item = BatchItem(
                session=s.id,
                obs=self._observation(job),
                prefix=prefix,
                start_step=job.start_step,
                new_episode=new_episode,
                context=s.context,
                episode=s.episode,
                prefix_start=job.prefix_start,
                prefix_committed=job.prefix_committed,
                state=self.policy.export_session_state(),  # the session's, its episode started
            )
            s.policy_state = item.state
            ready.append((job, item))
        # Each session's state now travels in its item: the policy's own state is nobody's until the
        # next job imports one (_activate).
        self.active = None
        if not ready:
            return
        t0 = time.monotonic()
        chunks = self.batcher.predict_chunks([item for _, item in ready])
        t1 = time.monotonic()
        if not isinstance(chunks, (list, tuple)) or len(chunks) != len(ready):
            raise ProtocolError(
                INTERNAL, f"predict_chunks returned {type(chunks).__name__} for {len(ready)} observations"
            )
        for job, item in ready:
            job.session.policy_state = item.state
        self.batch_sizes.append(len(ready))
        over = self._judge_budget([job.session for job, _ in ready], t1 - t0)
        for (job, item), chunk in zip(ready, chunks):
            job.session.last_step = job.step
            if self.recording is not None and isinstance(chunk, Chunk):  # as _observe: queued, never waits
                self.recording.observed(job.session.id, job.session.episode, item.obs, chunk, t1 - job.received)
            try:
                self._reply_chunk(job, chunk, t0, t1, batch=len(ready), over_budget=over)
            except ProtocolError as e:  # one bad chunk fails its own request only
                self._post_error(job, e.code, e.message)

    def _forget_closed_sessions(self) -> None:
        for sid, s in list(self._known.items()):
            if s.closed:
                del self._known[sid]
                self.batcher.end_session(sid)

    def _reply_chunk(
        self, job: Job, chunk: Any, t0: float, t1: float, batch: int = 1, over_budget: bool = False
    ) -> None:
        session = job.session
        actions = self._checked_actions(chunk)
        # what a recording reads here (every candidate's actions) stays here: protocol v2's info is unchanged
        info = to_wire({k: v for k, v in chunk.info.items() if k not in RECORDING_ONLY_INFO}) if isinstance(chunk.info, dict) else {}
        info.setdefault("latency_ms", (t1 - t0) * 1e3)
        if not isinstance(info.get("steer"), dict):
            info["steer"] = {}
        if not isinstance(info.get("strategies"), dict):
            info["strategies"] = {}  # a policy that reports none runs none
        info["episode"] = session.episode
        info["queue_ms"] = (t0 - job.received) * 1e3
        info["server_ms"] = (time.monotonic() - job.received) * 1e3
        if batch > 1:
            info.setdefault("batch", batch)  # a policy's own figure (sessions that shared its run) comes first
        if over_budget:
            info["over_budget"] = True
        header = {
            "type": CHUNK,
            "seq": self.next_seq(),
            "re": job.seq,
            "session": session.id,
            "start_step": int(chunk.start_step),
            "info": info,
        }
        session.chunks += 1
        telemetry = (
            CHUNK,
            {
                "session": session.id,
                "re": job.seq,
                "start_step": int(chunk.start_step),
                "step": job.step,
                "state_kind": job.state_kind,
                "episode": session.episode,
                "info": info,
            },
            {ACTIONS: actions},
        )
        self.post(
            Outgoing(
                job.identity,
                encode(header, {ACTIONS: actions}),
                telemetry=telemetry,
                server_ms=info["server_ms"],
                kind=CHUNK,
            )
        )

    def _checked_actions(self, chunk: Any) -> np.ndarray:
        """The chunk as welcome promised it, or an ``internal`` error: never a partial or non-finite chunk."""
        if not isinstance(chunk, Chunk):
            raise ProtocolError(INTERNAL, f"the policy returned {type(chunk).__name__}, not a Chunk")
        want = (self.spec.horizon, self.spec.action_dim)
        if chunk.actions.shape != want:
            raise ProtocolError(
                INTERNAL, f"the policy returned actions of shape {chunk.actions.shape}; welcome promised {want}"
            )
        if not np.all(np.isfinite(chunk.actions)):
            raise ProtocolError(INTERNAL, "the policy returned non-finite actions")
        return np.ascontiguousarray(chunk.actions, dtype=np.float32)
