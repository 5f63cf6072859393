"""The job queue on its own: sessions take turns, a session's order, superseded observes, coalesced
contexts, bounds."""

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
    # sessions take turns (a queued first); each session's own jobs in its order
    assert drain(q) == [("a", "context", 3), ("b", "observe", 2), ("a", "observe", 4), ("b", "episode", 5)]
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


def test_sessions_take_turns_so_a_backlog_delays_another_session_by_one_job():
    q = JobQueue(max_session_jobs=8)
    heavy, honest, third = session("heavy"), session("honest"), session("third")
    for seq in range(1, 9):  # a heavy session fills its line: 8 episodes and an observe
        q.put(job(EPISODE_JOB, heavy, seq))
    q.put(job(OBSERVE_JOB, heavy, 9))
    assert q.take(0).session is heavy  # heavy's first job runs ...
    q.put(job(OBSERVE_JOB, honest, 10))  # ... while the honest robot's observe arrives
    assert q.take(0).session is honest  # next: heavy was just served, honest waits for no backlog
    q.put(job(OBSERVE_JOB, honest, 11))
    q.put(job(OBSERVE_JOB, third, 12))  # a newcomer ranks just before the session served last (honest)
    order = [(j.session.id, j.seq) for j in iter(lambda: q.take(0), None)]
    assert order[:3] == [("heavy", 2), ("third", 12), ("honest", 11)]
    assert order[3:] == [("heavy", seq) for seq in range(3, 10)]


def test_a_new_session_goes_just_before_the_one_served_last_so_reopening_sessions_gains_no_turns():
    q = JobQueue()
    honest = session("honest")
    q.put(job(OBSERVE_JOB, honest, 1))
    assert q.take(0).session is honest
    q.put(job(OBSERVE_JOB, honest, 2))  # honest's next observe waits while its chunk is computed ...
    fresh = session("attacker-1")  # ... and an attacker's session arrives: honest just had its turn
    q.put(job(OBSERVE_JOB, fresh, 3))
    assert q.take(0).session is fresh
    fresher = session("attacker-2")  # the attacker re-opens a session to jump the line again: it cannot
    q.put(job(OBSERVE_JOB, fresher, 4))
    assert [j.session.id for j in iter(lambda: q.take(0), None)] == ["honest", "attacker-2"]


def test_batches_take_the_heads_of_other_sessions_lines_in_turn_order():
    q = JobQueue()
    a, b, c, d = (session(n) for n in "abcd")
    q.put(job(OBSERVE_JOB, a, 1))
    q.put(job(CONFIGURE_JOB, b, 2))  # b's observe waits behind its configure: not taken into a batch
    q.put(job(OBSERVE_JOB, b, 3))
    q.put(job(OBSERVE_JOB, c, 4))
    q.put(job(OBSERVE_JOB, d, 5))
    first = q.take(0)
    more = q.take_more_observes([first], 5, lambda j: j.session is not d)
    assert first.seq == 1 and [j.seq for j in more] == [4]
    assert [j.seq for j in iter(lambda: q.take(0), None)] == [2, 5, 3]


def test_a_closed_queue_refuses_new_jobs_busy():
    q = JobQueue()
    a = session("a")
    q.put(job(OBSERVE_JOB, a, 1))
    assert [j.seq for j in q.close()] == [1] and len(q) == 0
    with pytest.raises(ProtocolError) as e:
        q.put(job(OBSERVE_JOB, a, 2))
    assert e.value.code == "busy" and e.value.re == 2 and "stopping" in e.value.message
    assert q.take(0) is None
