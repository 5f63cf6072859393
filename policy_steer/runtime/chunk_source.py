"""Where the wall-clock loop gets its chunks: a small submit/poll interface, off the control thread.

A :class:`ChunkSource` takes a request and returns at once with a :class:`ChunkHandle` that the control
thread polls at every tick; it never blocks the control thread on inference. Two implementations:

- :class:`LocalChunkSource`: a worker thread running ``SteeredPolicy.predict_chunk`` in this process;
- :class:`ClientChunkSource`: the transport's ZeroMQ client (``PolicyClient.submit_chunk`` returns a
  request with the same ``done``/``poll`` surface), so a policy server on another machine plugs in
  unchanged.

Each handle carries monotonic stamps (``submitted``, ``completed``) from which the loop measures the
delay online.
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
import time
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np

from policy_steer.errors import PolicySteerError
from policy_steer.types import STEP, Chunk, Observation, PolicySpec


@runtime_checkable
class ChunkHandle(Protocol):
    """A chunk being computed. ``poll`` returns it once done (None before) and raises if it failed."""

    submitted: float  # monotonic seconds
    completed: float | None

    def done(self) -> bool: ...

    def poll(self) -> Chunk | None: ...


@runtime_checkable
class ChunkSource(Protocol):
    """Anything that computes chunks off the control thread."""

    @property
    def spec(self) -> PolicySpec: ...

    @property
    def wants_prefix(self) -> bool: ...

    def submit(
        self,
        obs: Observation,
        start_step: int,
        prefix: np.ndarray | None = None,
        state_kind: str = "measured",
        prefix_start: int | None = None,
        prefix_committed: int | None = None,
    ) -> ChunkHandle: ...

    def reset(self, seed: int | None = None, episode: dict[str, Any] | None = None) -> None: ...

    def close(self) -> None: ...


class SourceClosed(PolicySteerError):
    """The chunk source was closed; no more chunks will come."""


class LocalHandle:
    """A :class:`ChunkHandle` backed by a future that the worker thread settles."""

    def __init__(self) -> None:
        self.submitted = time.monotonic()
        self.started: float | None = None
        self.completed: float | None = None
        self._future: concurrent.futures.Future[Chunk] = concurrent.futures.Future()

    def done(self) -> bool:
        return self._future.done()

    def poll(self) -> Chunk | None:
        return self._future.result(0) if self._future.done() else None

    def wait(self, timeout: float | None = None) -> Chunk:
        return self._future.result(timeout)

    @property
    def latency_s(self) -> float | None:
        return None if self.completed is None else self.completed - self.submitted


def _copy_obs(obs: Observation) -> Observation:
    # The robot side may reuse its arrays; the worker must see the observation as it was when asked.
    return {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in obs.items()}


class LocalChunkSource:
    """Runs ``policy.predict_chunk`` (a SteeredPolicy, or anything with that signature) in a worker thread.

    Requests are computed one at a time in submission order. ``reset`` runs in the worker too, between
    requests, so the policy is never touched by two threads at once.
    """

    def __init__(self, policy, name: str = "policy-steer-inference") -> None:
        self.policy = policy
        self._jobs: queue.Queue[tuple[Callable[[], Any], LocalHandle] | None] = queue.Queue()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    @property
    def spec(self) -> PolicySpec:
        return self.policy.spec

    @property
    def wants_prefix(self) -> bool:
        return any(getattr(s, "wants_prefix", False) for s in getattr(self.policy, "strategies", []))

    def submit(
        self,
        obs: Observation,
        start_step: int,
        prefix: np.ndarray | None = None,
        state_kind: str = "measured",
        prefix_start: int | None = None,
        prefix_committed: int | None = None,
    ) -> LocalHandle:
        if self._closed.is_set():
            raise SourceClosed("this chunk source was closed")
        obs = _copy_obs(obs)
        kwargs: dict[str, Any] = {"prefix": None if prefix is None else np.array(prefix, np.float32), "start_step": int(start_step)}
        if prefix is not None and (prefix_start is not None or prefix_committed is not None):
            kwargs.update(prefix_start=prefix_start, prefix_committed=prefix_committed)
        handle = LocalHandle()
        self._jobs.put((lambda: self.policy.predict_chunk(obs, **kwargs), handle))
        return handle

    def reset(self, seed: int | None = None, episode: dict[str, Any] | None = None) -> None:
        """Reset the policy (in the worker, after any request already submitted); waits for it."""
        handle = LocalHandle()
        self._jobs.put((lambda: self.policy.reset(seed=seed, episode=episode), handle))
        handle.wait()

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._jobs.put(None)
        self._thread.join(timeout=30.0)

    def __enter__(self) -> "LocalChunkSource":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                break
            fn, handle = job
            handle.started = time.monotonic()
            try:
                result = fn()
            except BaseException as e:  # noqa: BLE001 - handed to the control thread through the handle
                handle.completed = time.monotonic()
                handle._future.set_exception(e)
            else:
                handle.completed = time.monotonic()
                handle._future.set_result(result)
        # Anything still queued after close never runs.
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job[1]._future.set_exception(SourceClosed("the chunk source was closed before this request ran"))


class ClientChunkSource:
    """The transport client (``policy_steer.transport.client.PolicyClient``) as a chunk source.

    PROTOCOL.md carries a prefix only as "actions committed before ``start_step``", so only those
    rows of a longer previous plan are sent (RTC's soft overlap stays local until the protocol says
    more). ``wants_prefix`` says whether the server's steering reads a prefix (e.g. ``rtc``).
    """

    def __init__(self, client, wants_prefix: bool = False, timeout_s: float | None = None) -> None:
        self.client = client
        self._wants_prefix = bool(wants_prefix)
        self.timeout_s = timeout_s

    @property
    def spec(self) -> PolicySpec:
        return self.client.spec

    @property
    def wants_prefix(self) -> bool:
        return self._wants_prefix

    def submit(
        self,
        obs: Observation,
        start_step: int,
        prefix: np.ndarray | None = None,
        state_kind: str = "measured",
        prefix_start: int | None = None,
        prefix_committed: int | None = None,
    ):
        if prefix is not None and prefix_start is not None:
            n = int(start_step) - int(prefix_start)  # rows that run before start_step
            # Only a run of rows that ends right before start_step fits the protocol's meaning.
            prefix = prefix[:n] if 0 < n <= len(prefix) else None
        if prefix is not None and len(prefix) == 0:
            prefix = None
        return self.client.submit_chunk(
            obs, step=int(obs[STEP]), start_step=int(start_step), prefix=prefix, state_kind=state_kind,
            timeout_s=self.timeout_s,
        )

    def reset(self, seed: int | None = None, episode: dict[str, Any] | None = None) -> None:
        """Nothing to do: the server keeps no per-episode state the client could clear."""

    def close(self) -> None:
        self.client.close()
