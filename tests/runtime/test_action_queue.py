"""The action queue never executes a stale, replaced or out-of-chunk action (property test)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policy_steer.errors import ValidationError
from policy_steer.runtime.action_queue import ActionQueue
from policy_steer.types import Chunk

H, A = 16, 3


def _chunk(start: int, tag: int) -> Chunk:
    # Each action encodes (tag, row) so that the test can tell where an executed action came from.
    rows = np.arange(H, dtype=np.float32)
    return Chunk(np.stack([np.full(H, tag, np.float32), rows, np.zeros(H, np.float32)], axis=1), start)


@settings(max_examples=200, deadline=None)
@given(
    latencies=st.lists(st.integers(0, 12), min_size=1, max_size=30),
    n_execute=st.integers(1, H),
    trigger=st.integers(0, 8),
    async_mode=st.booleans(),
)
def test_queue_executes_only_current_in_chunk_actions(latencies, n_execute, trigger, async_mode):
    q = ActionQueue(A)
    inflight = []  # (arrival step, chunk, tag)
    covered: dict[int, tuple[int, int]] = {}  # step -> (tag, row) the newest inserted chunk planned there
    lat = iter(latencies)
    tag = 0
    for step in range(200):
        for item in [f for f in inflight if f[0] <= step]:
            inflight.remove(item)
            _, chunk, t = item
            first = max(0, step - chunk.start_step) if async_mode else 0
            q.insert(chunk, n_execute=first + n_execute, first_index=first)
            last = min(first + n_execute, H)
            for s in list(covered):
                if s >= chunk.start_step + first:
                    del covered[s]
            for i in range(first, last):
                covered[chunk.start_step + i] = (t, i)
        if not inflight and q.remaining(step) <= trigger:
            d = next(lat, 0)
            tag += 1
            start = step if async_mode else step + q.remaining(step)
            inflight.append((step + d, _chunk(start, tag), tag))
        qa = q.pop(step)
        if qa is None:
            assert step not in covered  # nothing was planned for this step: hold, don't improvise
            continue
        t, row = int(qa.action[0]), int(qa.action[1])
        assert qa.step == step  # never an action planned for another step
        assert row == qa.index and row < H  # never past its chunk
        assert (t, row) == covered[step]  # only the newest chunk covering this step, within its executed rows


def test_refuses_bad_chunks_without_changing_anything():
    q = ActionQueue(A)
    q.insert(_chunk(0, 1), n_execute=8)
    bad = _chunk(2, 2)
    bad.actions[3, 1] = np.inf
    with pytest.raises(ValidationError, match="non-finite"):
        q.insert(bad, n_execute=8)
    with pytest.raises(ValidationError, match=r"\[H, 3\]"):
        q.insert(Chunk(np.zeros((4, 5), np.float32), 0), n_execute=4)
    assert q.remaining(0) == 8 and int(q.pop(3).action[0]) == 1


def test_rows_in_the_past_are_dropped_and_pending_is_consecutive():
    q = ActionQueue(A)
    q.insert(_chunk(0, 1), n_execute=8, first_index=3)
    assert q.pop(2) is None and q.pop(3).index == 3
    assert q.remaining(4) == 4 and q.pending(4).shape == (4, A)
    assert q.pop(9) is None and q.remaining(4) == 0  # popping later drops the earlier ones
