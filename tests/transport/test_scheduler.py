"""The job queue on its own: a session's order, superseded observes, coalesced contexts, bounds."""

from __future__ import annotations

import pytest

from policy_steer.transport.errors import ProtocolError
from policy_steer.transport.scheduler import CONFIGURE_JOB, CONTEXT_JOB, EPISODE_JOB, OBSERVE_JOB, Job, JobQueue
from policy_steer.transport.sessions import Session
from policy_steer.types import EpisodeContext


def session(name: str) -> Session:
    return Session(id=name, peer=name.encode(), client=name, control_hz=10.0, opened=0.0, last_seen=0.0)


def job(kind: str, s: Session, seq: int) -> Job:
    ctx = EpisodeContext(stamp=float(seq)) if kind in (EPISODE_JOB, CONTEXT_JOB) else None
    return Job(kind=kind, session=s, identity=s.peer, seq=seq, received=0.0, step=seq, context=ctx)


def drain(q: JobQueue) -> list[tuple[str, str, int]]:
    out = []
    while len(q):
        j = q.take(0)
        out.append((j.session.id, j.kind, j.seq))
    return out


def test_a_sessions_jobs_keep_their_order_and_a_newer_observe_supersedes_the_queued_one():
    q = JobQueue()
    a, b = session("a"), session("b")
    assert q.put(job(OBSERVE_JOB, a, 1)) is None
    assert q.put(job(OBSERVE_JOB, b, 2)) is None
    assert q.put(job(CONTEXT_JOB, a, 3)) is None
    old = q.put(job(OBSERVE_JOB, a, 4))  # a context of a's was queued after its observe: the new one goes last
    assert old.seq == 1
    assert q.put(job(EPISODE_JOB, b, 5)) is None
    assert drain(q) == [("b", "observe", 2), ("a", "context", 3), ("a", "observe", 4), ("b", "episode", 5)]
    q.put(job(OBSERVE_JOB, a, 6))
    assert q.put(job(OBSERVE_JOB, a, 7)).seq == 6  # nothing of a's after it: the newer takes its place
    assert drain(q) == [("a", "observe", 7)]


def test_a_newer_context_replaces_a_queued_one_only_when_nothing_of_the_session_follows_it():
    q = JobQueue()
    a = session("a")
    q.put(job(CONTEXT_JOB, a, 1))
    assert q.put(job(CONTEXT_JOB, a, 2)) is None  # replaced in place: a snapshot supersedes a snapshot
    q.put(job(OBSERVE_JOB, a, 3))
    q.put(job(CONTEXT_JOB, a, 4))  # the observe must see context 2: context 4 queues after it
    assert drain(q) == [("a", "context", 2), ("a", "observe", 3), ("a", "context", 4)]


def test_other_jobs_of_a_session_are_bounded():
    q = JobQueue(max_session_jobs=3)
    a, b = session("a"), session("b")
    for seq, kind in enumerate((CONFIGURE_JOB, EPISODE_JOB, CONFIGURE_JOB), 1):
        q.put(job(kind, a, seq))
    with pytest.raises(ProtocolError) as e:
        q.put(job(EPISODE_JOB, a, 9))
    assert e.value.code == "busy" and e.value.re == 9 and "3 configure/episode/context" in e.value.message
    q.put(job(OBSERVE_JOB, a, 11))  # an observe is not counted (one is queued at most anyway)
    q.put(job(EPISODE_JOB, b, 12))  # another session is not affected
    assert len(q) == 5
