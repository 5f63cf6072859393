"""The queue between the socket thread and the inference thread.

Jobs (``observe``, ``configure``, ``episode``, ``context``) run one at a time, in arrival order, and
a session's own jobs always run in the order the session sent them (a ``context`` sent before an
``observe`` is applied before that observe's chunk is computed).

Each session has at most one *queued* ``observe``: when a newer one arrives the older is taken out
and returned to the caller, which answers it ``busy`` (the client has moved on). The newer one takes
the older one's place in the line unless something else of the same session was queued after it, in
which case it goes to the back so the session's own order is kept.

A ``context`` is a whole snapshot of the scene, so a newer one replaces a queued one of the same
session in place when nothing of that session was queued after it (nothing is answered: a context
is a notification). Other jobs of a session (``configure``, ``episode``, ``context``) are bounded by
``max_session_jobs``; one more is refused ``busy``. The queue is therefore bounded by the number of
sessions times (1 + ``max_session_jobs``).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from policy_steer.transport.errors import BUSY, ProtocolError
from policy_steer.transport.sessions import Session
from policy_steer.types import EpisodeContext

OBSERVE_JOB = "observe"
CONFIGURE_JOB = "configure"
EPISODE_JOB = "episode"
CONTEXT_JOB = "context"
JOB_KINDS = (OBSERVE_JOB, CONFIGURE_JOB, EPISODE_JOB, CONTEXT_JOB)


@dataclass(eq=False)
class Job:
    """One request for the inference thread; ``peer`` is the routing identity to answer."""

    kind: str
    session: Session
    identity: bytes
    seq: int
    received: float
    stamp: float = 0.0  # the client's clock, as sent
    step: int = 0
    start_step: int = 0
    state_kind: str = "measured"
    task: str | None = None
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    prefix: np.ndarray | None = None
    prefix_start: int | None = None  # control index of the prefix's row 0 (None: it ends before start_step)
    prefix_committed: int | None = None  # its leading rows that run for sure (None: all)
    steer: dict[str, Any] | None = None
    context: EpisodeContext | None = None  # episode / context jobs: already checked against the schema
    frames: list[Any] = field(default_factory=list)  # keeps the received buffers alive for the views

    def __post_init__(self) -> None:
        assert self.kind in JOB_KINDS, self.kind


class JobQueue:
    def __init__(self, max_session_jobs: int = 8) -> None:
        self.max_session_jobs = max_session_jobs
        self._jobs: deque[Job] = deque()
        self._cond = threading.Condition()
        self._closed = False

    def __len__(self) -> int:
        return len(self._jobs)

    def put(self, job: Job) -> Job | None:
        """Queue ``job``; return the observe it superseded (to be answered ``busy``), if any."""
        with self._cond:
            superseded = None
            if job.kind == OBSERVE_JOB:
                for i, queued in enumerate(self._jobs):
                    if queued.session is job.session and queued.kind == OBSERVE_JOB:
                        superseded = queued
                        later = any(j.session is job.session for j in list(self._jobs)[i + 1 :])
                        if later:
                            del self._jobs[i]
                            self._jobs.append(job)
                        else:
                            self._jobs[i] = job
                        break
                else:
                    self._jobs.append(job)
            else:
                mine = [i for i, j in enumerate(self._jobs) if j.session is job.session]
                if job.kind == CONTEXT_JOB and mine and self._jobs[mine[-1]].kind == CONTEXT_JOB:
                    self._jobs[mine[-1]] = job  # the newer scene supersedes the queued one
                    self._cond.notify()
                    return None
                n = sum(1 for i in mine if self._jobs[i].kind != OBSERVE_JOB)
                if n >= self.max_session_jobs:
                    raise ProtocolError(
                        BUSY,
                        f"{job.kind}: {n} configure/episode/context messages of this session are already queued",
                        job.seq,
                    )
                self._jobs.append(job)
            self._cond.notify()
            return superseded

    def take(self, timeout_s: float | None = None) -> Job | None:
        """The next job, or None after ``timeout_s`` or once closed."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            while not self._jobs and not self._closed:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            return self._jobs.popleft() if self._jobs else None

    def take_more_observes(self, batch: list[Job], max_n: int, compatible) -> list[Job]:
        """Up to ``max_n`` more queued observes of sessions not in ``batch`` for which ``compatible(job)``.

        A session's own order is kept: once one of its jobs is skipped (a configure, episode or
        context, or an observe that does not fit), nothing later of that session is taken.
        """
        taken: list[Job] = []
        with self._cond:
            in_batch = {id(j.session) for j in batch}
            blocked: set[int] = set()
            for job in list(self._jobs):
                if len(taken) >= max_n:
                    break
                key = id(job.session)
                if key in in_batch or key in blocked:
                    blocked.add(key)
                    continue
                if job.kind == OBSERVE_JOB and compatible(job):
                    self._jobs.remove(job)
                    taken.append(job)
                    in_batch.add(key)
                else:
                    blocked.add(key)
        return taken

    def drop_session(self, session: Session) -> list[Job]:
        """Remove and return the queued jobs of a closed session."""
        with self._cond:
            gone = [j for j in self._jobs if j.session is session]
            for j in gone:
                self._jobs.remove(j)
            return gone

    def close(self) -> list[Job]:
        """Wake the inference thread for good; return what was still queued."""
        with self._cond:
            self._closed = True
            left = list(self._jobs)
            self._jobs.clear()
            self._cond.notify_all()
            return left
