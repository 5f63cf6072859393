"""The queue between the socket thread and the inference thread.

Jobs (``observe``, ``configure``, ``episode``, ``context``) run one at a time. **Sessions take turns**
(round-robin): each time the inference thread is free it takes the first job of the session that was
served least recently among those with a job waiting; a session new to the queue ranks as if it had
been served just before the session served last (ahead of the job in flight's session, behind every
other). So a session waits, before its own job runs, for at most one job of each other session,
whatever those sessions queue meanwhile, and a client that re-opens sessions gains no extra turns:
one heavy session delays another by one of its chunks, never by a backlog. A session's own jobs always run in the order the session sent them (a
``context`` sent before an ``observe`` is applied before that observe's chunk is computed).

Each session has at most one *queued* ``observe``: when a newer one arrives the older is taken out
and returned to the caller, which answers it ``busy`` (the client has moved on). The newer one takes
the older one's place in the session's line unless something else of the same session was queued
after it, in which case it goes to the back of the session's line so the session's own order is kept.

A ``context`` is a whole snapshot of the scene, so a newer one replaces a queued one of the same
session in place when nothing of that session was queued after it (nothing is answered: a context
is a notification). Other jobs of a session (``configure``, ``episode``, ``context``) are bounded by
``max_session_jobs``; one more is refused ``busy``. The queue is therefore bounded by the number of
sessions times (1 + ``max_session_jobs``).
"""

from __future__ import annotations

import itertools
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
        self._lines: dict[Session, deque[Job]] = {}  # each session with jobs waiting: its jobs, in its order
        self._n = 0
        self._served = 0  # jobs taken so far
        self._order = itertools.count()  # ties between sessions that queued at the same point: first come first
        self._cond = threading.Condition()
        self._closed = False

    def __len__(self) -> int:
        return self._n

    def put(self, job: Job) -> Job | None:
        """Queue ``job``; return the observe it superseded (to be answered ``busy``), if any."""
        with self._cond:
            if self._closed:
                raise ProtocolError(BUSY, f"{job.kind}: the server is stopping", job.seq)
            s = job.session
            if not s.turn:  # new to the queue: just before the session served last
                s.turn = (2 * self._served - 1, next(self._order))
            line = self._lines.get(s)
            if line is None:
                line = self._lines[s] = deque()
            superseded = None
            if job.kind == OBSERVE_JOB:
                for i, queued in enumerate(line):
                    if queued.kind == OBSERVE_JOB:
                        superseded = queued
                        if i < len(line) - 1:  # something of the session's follows it: keep the session's order
                            del line[i]
                            line.append(job)
                        else:
                            line[i] = job
                        break
                else:
                    line.append(job)
                    self._n += 1
            else:
                if job.kind == CONTEXT_JOB and line and line[-1].kind == CONTEXT_JOB:
                    line[-1] = job  # the newer scene supersedes the queued one
                    self._cond.notify()
                    return None
                n = sum(1 for j in line if j.kind != OBSERVE_JOB)
                if n >= self.max_session_jobs:
                    if not line:
                        del self._lines[s]
                    raise ProtocolError(
                        BUSY,
                        f"{job.kind}: {n} configure/episode/context messages of this session are already queued",
                        job.seq,
                    )
                line.append(job)
                self._n += 1
            self._cond.notify()
            return superseded

    def _pop_turn(self, session: Session) -> Job:
        """The first job of ``session``'s line; the session goes to the back of the turns."""
        line = self._lines[session]
        job = line.popleft()
        if not line:
            del self._lines[session]
        self._n -= 1
        self._served += 1
        session.turn = (2 * self._served, next(self._order))
        return job

    def _by_turn(self) -> list[Session]:
        return sorted(self._lines, key=lambda s: s.turn)

    def take(self, timeout_s: float | None = None) -> Job | None:
        """The next job (the first of the least recently served session's), or None after ``timeout_s``
        or once closed."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            while not self._lines and not self._closed:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            if not self._lines:
                return None
            return self._pop_turn(min(self._lines, key=lambda s: s.turn))

    def take_more_observes(self, batch: list[Job], max_n: int, compatible, until: float | None = None) -> list[Job]:
        """Up to ``max_n`` more observes of sessions not in ``batch``, each the first job of its session's
        line and ``compatible(job)``, in turn order (a session's own order is kept: an observe behind a
        configure, episode or context of its session is not taken). ``until`` (a ``time.monotonic()``
        deadline, the batching window): also wait for more as they arrive, returning once ``max_n`` are
        taken, at the deadline, or when the queue closes."""
        taken: list[Job] = []
        with self._cond:
            in_batch = {id(j.session) for j in batch}
            while True:
                for s in self._by_turn():
                    if len(taken) >= max_n:
                        break
                    if id(s) in in_batch:
                        continue
                    head = self._lines[s][0]
                    if head.kind == OBSERVE_JOB and compatible(head):
                        taken.append(self._pop_turn(s))
                        in_batch.add(id(s))
                left = None if until is None else until - time.monotonic()
                if len(taken) >= max_n or left is None or left <= 0 or self._closed:
                    return taken
                self._cond.wait(left)

    def drop_session(self, session: Session) -> list[Job]:
        """Remove and return the queued jobs of a closed session."""
        with self._cond:
            gone = list(self._lines.pop(session, ()))
            self._n -= len(gone)
            return gone

    def close(self) -> list[Job]:
        """Wake the inference thread for good; return what was still queued."""
        with self._cond:
            self._closed = True
            left = [j for line in self._lines.values() for j in line]
            self._lines.clear()
            self._n = 0
            self._cond.notify_all()
            return left
