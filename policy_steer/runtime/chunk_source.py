"""Where the control loop gets its chunks: a small submit/poll interface, off the control thread.

A :class:`ChunkSource` takes a request and returns at once with a :class:`ChunkHandle` that the control
loop polls; on the wall clock it never blocks the control thread on inference. It also carries the
episode to the policy: ``start_episode(context, seed)`` at reset, ``update_context(context)`` when the
scene changes (before the next request), ``report_executed(step)`` after every action. Two
implementations:

- :class:`LocalChunkSource`: ``SteeredPolicy`` (any :class:`InProcessPolicy`) in this process, on a
  worker thread, or ``inline`` (computed inside ``submit``, on the caller's thread: the virtual clock's
  benchmark runs, where nothing may depend on thread timing);
- :class:`ClientChunkSource`: the transport's ZeroMQ client (``PolicyClient.submit_chunk`` returns a
  request with the same ``done``/``poll`` surface; ``start_episode``/``update_context``/
  ``report_executed`` are protocol v2's ``episode``/``context``/``executed`` messages), so a policy
  server on another machine plugs in unchanged.

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
from policy_steer.types import STEP, Chunk, EpisodeContext, ExecutedStep, Observation, PolicySpec


@runtime_checkable
class ChunkHandle(Protocol):
    """A chunk being computed. ``poll`` returns it once done (None before) and raises if it failed."""

    submitted: float  # monotonic seconds
    completed: float | None

    def done(self) -> bool: ...

    def poll(self) -> Chunk | None: ...


@runtime_checkable
class ChunkSource(Protocol):
    """Anything that computes chunks for the control loop; every member the loop uses is declared here.

    - ``spec``: the policy's spec; ``wants_prefix``: its steering reads the previous plan (RTC), so the
      loop sends it;
    - ``submit(...)``: ask for a chunk; returns at once with a handle (an inline source computes it first);
    - ``start_episode(context, seed)``: a new episode with its context; blocking. A strategy that cannot
      act raises (in process: :class:`~policy_steer.errors.SteeringRefused`; over the wire: the client's
      ``RemoteError`` with the refusal ``code``) and the episode does not start;
    - ``update_context(context)``: the scene now; non-blocking, in force for the next ``submit``;
    - ``report_executed(step)``: what the robot executed at one control step; non-blocking (in process:
      nothing to do, the loop's own records have it);
    - ``close()``.
    """

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

    def start_episode(self, context: EpisodeContext, seed: int | None = None) -> dict[str, Any]: ...

    def update_context(self, context: EpisodeContext) -> None: ...

    def report_executed(self, step: ExecutedStep) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class InProcessPolicy(Protocol):
    """What :class:`LocalChunkSource` calls: :class:`~policy_steer.steered_policy.SteeredPolicy` has it all."""

    @property
    def spec(self) -> PolicySpec: ...

    @property
    def wants_prefix(self) -> bool: ...

    def start_episode(self, context: EpisodeContext | None = None, seed: int | None = None) -> dict[str, Any]: ...

    def update_context(self, context: EpisodeContext) -> None: ...

    def predict_chunk(
        self,
        obs: Observation,
        prefix: np.ndarray | None = None,
        start_step: int | None = None,
        prefix_start: int | None = None,
        prefix_committed: int | None = None,
    ) -> Chunk: ...


class SourceClosed(PolicySteerError):
    """The chunk source was closed; no more chunks will come."""


class LocalHandle:
    """A :class:`ChunkHandle` backed by a future that the worker thread (or ``submit`` itself) settles."""

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

    def _run(self, fn: Callable[[], Any]) -> None:
        self.started = time.monotonic()
        try:
            result = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the control thread through the handle
            self.completed = time.monotonic()
            self._future.set_exception(e)
        else:
            self.completed = time.monotonic()
            self._future.set_result(result)


def _copy_obs(obs: Observation) -> Observation:
    # The robot side may reuse its arrays; the worker must see the observation as it was when asked.
    return {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in obs.items()}


class LocalChunkSource:
    """Runs ``policy.predict_chunk`` (an :class:`InProcessPolicy`, e.g. a SteeredPolicy) in this process.

    By default on a worker thread: requests are computed one at a time in submission order, and
    ``start_episode``/``update_context`` run in the worker too, between requests, so the policy is never
    touched by two threads at once. ``inline=True``: no thread; ``submit`` computes the chunk before it
    returns (a failure raises from ``submit``), and the episode calls run at once. The virtual clock
    uses it (the simulation benchmark): the result then depends on nothing but the seeds.
    """

    def __init__(self, policy: InProcessPolicy, name: str = "policy-steer-inference", inline: bool = False) -> None:
        self.policy = policy
        self.inline = bool(inline)
        self._jobs: queue.Queue[tuple[Callable[[], Any], LocalHandle] | None] = queue.Queue()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        if not self.inline:
            self._thread = threading.Thread(target=self._work, name=name, daemon=True)
            self._thread.start()

    @property
    def spec(self) -> PolicySpec:
        return self.policy.spec

    @property
    def wants_prefix(self) -> bool:
        return bool(self.policy.wants_prefix)

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
        kwargs: dict[str, Any] = {"prefix": None if prefix is None else np.array(prefix, np.float32), "start_step": int(start_step)}
        if prefix is not None and (prefix_start is not None or prefix_committed is not None):
            kwargs.update(prefix_start=prefix_start, prefix_committed=prefix_committed)
        handle = LocalHandle()
        if self.inline:
            handle.started = handle.submitted
            chunk = self.policy.predict_chunk(obs, **kwargs)  # raises here: nothing else would see it
            handle.completed = time.monotonic()
            handle._future.set_result(chunk)
            return handle
        obs = _copy_obs(obs)
        self._jobs.put((lambda: self.policy.predict_chunk(obs, **kwargs), handle))
        return handle

    def start_episode(self, context: EpisodeContext, seed: int | None = None) -> dict[str, Any]:
        """Start the policy's episode (in the worker, after any request already submitted); waits for it
        and raises what the policy raised (SteeringRefused: the episode did not start)."""
        return self._call(lambda: self.policy.start_episode(context, seed=seed), wait=True)

    def update_context(self, context: EpisodeContext) -> None:
        """The scene now; in force for the next :meth:`submit` (the worker runs jobs in order)."""
        self._call(lambda: self.policy.update_context(context), wait=False)

    def report_executed(self, step: ExecutedStep) -> None:
        """Nothing to do in process: the control loop's records already hold what ran."""

    def _call(self, fn: Callable[[], Any], wait: bool) -> Any:
        if self._closed.is_set():
            raise SourceClosed("this chunk source was closed")
        if self.inline:
            return fn()
        handle = LocalHandle()
        self._jobs.put((fn, handle))
        return handle.wait() if wait else None

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        if self._thread is not None:
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
            handle._run(fn)
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

    ``start_episode``, ``update_context`` and ``report_executed`` map onto the client's methods of the
    same names (protocol v2's ``episode``, ``context`` and ``executed`` messages); a ``seed`` given to
    ``start_episode`` replaces the context's (the server reseeds the session's noise with it). The
    previous plan travels whole, with ``prefix_start``/``prefix_committed`` (protocol v2's ``observe``),
    so RTC's soft overlap is inpainted on the server as it is in process. ``wants_prefix`` is what the
    server said in ``episode_started`` (its steering reads a prefix, e.g. ``rtc``).
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
        """What the server said in its last ``episode_started`` (its steering reads the previous plan),
        else what this source was built with."""
        episode = self.client.episode
        if episode is not None and "wants_prefix" in episode:
            return bool(episode["wants_prefix"])
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
        if prefix is not None and len(prefix) == 0:
            prefix = None
        return self.client.submit_chunk(
            obs, step=int(obs[STEP]), start_step=int(start_step), prefix=prefix, state_kind=state_kind,
            timeout_s=self.timeout_s,
            prefix_start=None if prefix is None else prefix_start,
            prefix_committed=None if prefix is None else prefix_committed,
        )

    def start_episode(self, context: EpisodeContext, seed: int | None = None) -> dict[str, Any]:
        """Protocol v2 ``episode``: blocking; a refusal raises the client's RemoteError with its code."""
        return self.client.start_episode(context, seed=seed)

    def update_context(self, context: EpisodeContext) -> None:
        self.client.update_context(context)

    def report_executed(self, step: ExecutedStep) -> None:
        self.client.report_executed(step)

    def close(self) -> None:
        self.client.close()
