"""The inference thread: runs the policy for queued jobs, off the socket thread.

The socket thread keeps answering ``ping`` (and rejecting bad messages) while a chunk is computed;
torch releases the GIL inside its kernels, so that thread gets time even on a busy CPU.

What the server needs from a policy (:class:`ServedPolicy`) is small: ``spec`` and ``predict_chunk``.
Optional hooks, used when present:

- ``configure(task=..., steer=...) -> dict``: the instruction and steering settings of the session
  whose job runs next; returns the settings in force. ``steer`` is the session's whole map (``{}``
  means the defaults); it is called only when the settings differ from the last ones applied.
- ``reset()``: forget observation history (a new session or episode, or another session's turn).
- ``export_session_state() -> Any`` / ``import_session_state(state)``: move per-episode state (an
  observation history) in and out, so several sessions can share one model without mixing their
  histories. Without them the policy is ``reset()`` whenever the session changes, which is correct
  but drops history (lerobot then pads with the current frame, as at an episode start).

A session's episode restarts (``reset``) when the session is new and when an ``observe`` carries a
``step`` lower than the session's previous one.

Batching (``max_batch > 1``, and the policy has ``predict_chunks(items: list[BatchItem]) -> list[Chunk]``):
queued observes of different sessions with the same steering settings run as one call. The policy
then keeps per-session state itself, keyed by ``BatchItem.session`` (``new_episode`` says when to
clear it; ``end_session(session_id)``, if present, says when a session is gone), the instruction
travels in each observation's ``task``, and ``configure`` receives ``task=None``. Every observe
goes through ``predict_chunks`` then, alone or not.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from policy_steer.errors import PolicySteerError
from policy_steer.transport.codec import encode, to_wire
from policy_steer.transport.errors import BAD_ARRAY, BAD_HEADER, INTERNAL, NO_SESSION, ProtocolError
from policy_steer.transport.messages import ACTIONS, CHUNK, CONFIGURED
from policy_steer.transport.scheduler import OBSERVE_JOB, Job, JobQueue
from policy_steer.transport.sessions import Session
from policy_steer.types import STAMP, STEP, TASK, Chunk, PolicySpec

log = logging.getLogger(__name__)


@runtime_checkable
class ServedPolicy(Protocol):
    """Anything with a spec and ``predict_chunk`` (a SteeredPolicy, the fixed-chunk test policy, ...)."""

    spec: PolicySpec

    def predict_chunk(
        self, obs: dict[str, Any], prefix: np.ndarray | None = None, start_step: int | None = None
    ) -> Chunk: ...


@dataclass
class BatchItem:
    """One observe of a batch: whose it is, what it saw, and where its chunk starts."""

    session: str
    obs: dict[str, Any]
    prefix: np.ndarray | None
    start_step: int
    new_episode: bool


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


def error_frames(seq: int, code: str, message: str, re: int | None) -> list[Any]:
    header: dict[str, Any] = {"type": "error", "seq": seq, "code": code, "message": message[:1000]}
    if re is not None:
        header["re"] = re
    return encode(header)


class InferenceWorker(threading.Thread):
    """Takes jobs from ``queue`` one at a time and hands replies to ``post``."""

    def __init__(
        self,
        policy: ServedPolicy,
        queue: JobQueue,
        post: Callable[[Outgoing], None],
        next_seq: Callable[[], int],
        max_batch: int = 1,
    ) -> None:
        super().__init__(name="policy-steer-inference", daemon=True)
        self.policy = policy
        self.spec = policy.spec
        self.queue = queue
        self.post = post
        self.next_seq = next_seq
        self.active: Session | None = None
        self.applied: tuple[str | None, dict[str, Any]] | None = None
        self.stateful = callable(getattr(policy, "export_session_state", None)) and callable(
            getattr(policy, "import_session_state", None)
        )
        self.configurable = callable(getattr(policy, "configure", None))
        self.max_batch = max_batch if callable(getattr(policy, "predict_chunks", None)) else 1
        if max_batch > 1 and self.max_batch == 1:
            log.warning(
                "max_batch=%d ignored: the policy (%s) has no predict_chunks; observes run one at a time",
                max_batch, type(policy).__name__,
            )
        self.batch_sizes: list[int] = []
        self._known: dict[str, Session] = {}  # sessions the batching policy has seen
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        while not self._stopping.is_set():
            job = self.queue.take(timeout_s=0.2)
            if self.max_batch > 1:
                self._forget_closed_sessions()
            if job is None:
                continue
            jobs = [job]
            if job.kind == OBSERVE_JOB and self.max_batch > 1 and not job.session.closed:
                steer = job.session.steer
                jobs += self.queue.take_more_observes(
                    jobs, self.max_batch - 1, lambda j, steer=steer: j.session.steer == steer and not j.session.closed
                )
            try:
                if job.session.closed:
                    raise ProtocolError(
                        NO_SESSION, "the session closed (expired or replaced by a new hello) before its turn", job.seq
                    )
                if job.kind != OBSERVE_JOB:
                    self._configure(job)
                elif self.max_batch > 1:
                    self._observe_batch(jobs)
                else:
                    self._observe(job)
            except ProtocolError as e:
                for j in jobs:
                    self.post(
                        Outgoing(j.identity, error_frames(self.next_seq(), e.code, e.message, j.seq), kind=e.code)
                    )
            except Exception as e:  # never let a policy bug end the thread
                log.exception("%s job of session %s failed", job.kind, job.session.id)
                code = (
                    (BAD_ARRAY if job.kind == OBSERVE_JOB else BAD_HEADER)
                    if isinstance(e, PolicySteerError)
                    else INTERNAL
                )
                what = "the policy refused the observation" if job.kind == OBSERVE_JOB else "configure failed"
                msg = f"{what}: {type(e).__name__}: {e}"
                for j in jobs:
                    self.post(Outgoing(j.identity, error_frames(self.next_seq(), code, msg, j.seq), kind=code))
            finally:
                for j in jobs:
                    j.frames = []  # release the received buffers now

    # --- sessions ---------------------------------------------------------------------------------
    def _reset(self) -> None:
        reset = getattr(self.policy, "reset", None)
        if callable(reset):
            reset()

    def _activate(self, session: Session, apply_settings: bool = True) -> None:
        """Make ``session``'s history and settings the policy's before one of its jobs runs."""
        if self.active is not session:
            if self.stateful and self.active is not None and not self.active.closed:
                self.active.policy_state = self.policy.export_session_state()
            if self.stateful and session.policy_state is not None and not session.needs_reset:
                self.policy.import_session_state(session.policy_state)
            else:
                session.needs_reset = True
            self.active = session
        if session.needs_reset:
            self._reset()
            session.needs_reset = False
        if apply_settings:
            self._apply_settings(session)

    def _apply_settings(self, session: Session, force: bool = False) -> Any:
        """Call the policy's ``configure`` hook if the session's settings are not the ones in force.

        Batching policies get ``task=None``: their instruction travels in each observation.
        """
        task = None if self.max_batch > 1 else session.task
        wanted = (task, dict(session.steer))
        if not self.configurable or (self.applied == wanted and not force):
            return None
        self.applied = None  # unknown until the hook returns
        in_force = self.policy.configure(task=task, steer=dict(session.steer))
        self.applied = wanted
        return in_force

    # --- jobs ---------------------------------------------------------------------------------------
    def _configure(self, job: Job) -> None:
        session = job.session
        before = (session.task, dict(session.steer))
        if job.task is not None:
            session.task = job.task
        for k, v in (job.steer or {}).items():  # a key set to None returns it to its default
            if v is None:
                session.steer.pop(k, None)
            else:
                session.steer[k] = v
        in_force: Any = dict(session.steer)
        if self.configurable:
            try:
                if self.max_batch <= 1:
                    self._activate(session, apply_settings=False)
                in_force = self._apply_settings(session, force=True)  # one call; it says what is in force
            except (PolicySteerError, ValueError, KeyError, TypeError) as e:
                session.task, session.steer = before[0], before[1]
                raise ProtocolError(BAD_HEADER, f"configure: steer refused: {type(e).__name__}: {e}", job.seq) from None
        header = {
            "type": CONFIGURED,
            "seq": self.next_seq(),
            "re": job.seq,
            "session": session.id,
            "steer": to_wire(in_force if isinstance(in_force, dict) else {}),
        }
        self.post(Outgoing(job.identity, encode(header), kind=CONFIGURED))

    def _observation(self, job: Job) -> dict[str, Any]:
        obs: dict[str, Any] = {k: np.array(v) for k, v in job.arrays.items()}  # writable, owned by the policy
        obs[STEP] = job.step
        obs[STAMP] = job.stamp
        task = job.task if job.task is not None else job.session.task
        if task is not None:
            obs[TASK] = task
        return obs

    def _observe(self, job: Job) -> None:
        session = job.session
        if session.last_step is not None and job.step < session.last_step:
            session.needs_reset = True  # the robot started a new episode
        self._activate(session)
        obs = self._observation(job)
        prefix = None if job.prefix is None else np.array(job.prefix)
        t0 = time.monotonic()
        chunk = self.policy.predict_chunk(obs, prefix=prefix, start_step=job.start_step)
        session.last_step = job.step
        self._reply_chunk(job, chunk, t0, time.monotonic())

    def _observe_batch(self, jobs: list[Job]) -> None:
        self._apply_settings(jobs[0].session)  # every job of the batch has the same steer settings
        items = []
        for job in jobs:
            s = job.session
            new_episode = s.needs_reset or (s.last_step is not None and job.step < s.last_step)
            s.needs_reset = False
            self._known[s.id] = s
            prefix = None if job.prefix is None else np.array(job.prefix)
            items.append(
                BatchItem(
                    session=s.id,
                    obs=self._observation(job),
                    prefix=prefix,
                    start_step=job.start_step,
                    new_episode=new_episode,
                )
            )
        t0 = time.monotonic()
        chunks = self.policy.predict_chunks(items)
        t1 = time.monotonic()
        if not isinstance(chunks, (list, tuple)) or len(chunks) != len(jobs):
            raise ProtocolError(
                INTERNAL, f"predict_chunks returned {type(chunks).__name__} for {len(jobs)} observations"
            )
        self.batch_sizes.append(len(jobs))
        for job, chunk in zip(jobs, chunks):
            job.session.last_step = job.step
            try:
                self._reply_chunk(job, chunk, t0, t1, batch=len(jobs))
            except ProtocolError as e:  # one bad chunk fails its own request only
                self.post(
                    Outgoing(job.identity, error_frames(self.next_seq(), e.code, e.message, job.seq), kind=e.code)
                )

    def _forget_closed_sessions(self) -> None:
        end = getattr(self.policy, "end_session", None)
        for sid, s in list(self._known.items()):
            if s.closed:
                del self._known[sid]
                if callable(end):
                    end(sid)

    def _reply_chunk(self, job: Job, chunk: Any, t0: float, t1: float, batch: int = 1) -> None:
        session = job.session
        actions = self._checked_actions(chunk)
        info = to_wire(chunk.info) if isinstance(chunk.info, dict) else {}
        info.setdefault("latency_ms", (t1 - t0) * 1e3)
        if not isinstance(info.get("steer"), dict):
            info["steer"] = {}
        info["queue_ms"] = (t0 - job.received) * 1e3
        info["server_ms"] = (time.monotonic() - job.received) * 1e3
        if batch > 1:
            info["batch"] = batch
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
