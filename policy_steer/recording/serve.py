"""``serve --record_bag DIR`` / ``--foxglove PORT``: one recording per session-episode on the server.

The server has no control loop, but it sees what a robot's loop sends it (protocol v2): the episode's
context (``episode``), every observation with the robot's stamp (``observe``), the chunk it computed
with its whole info (every candidate's actions when the served SteeredPolicy keeps them), and what the
robot executed (``executed``, with the robot's stamp). :class:`ServerRecording` turns those into the
same topics as a robot's bag (:mod:`~policy_steer.recording.messages`), one
:class:`~policy_steer.recording.recorder.Recorder` per session-episode, in
``DIR/<session>_episode<k>``.

Every executed step that carries the robot's measured state (the robot host always sends it) gives the
step's ``/joint_states``, ``/tf`` and path pose; every observation gives its camera frames; so a served
bag has a message per control step like the robot's own.

Stamps: the control index on the policy's rate, ``step / hz``, for observations, their chunks and the
executed steps. That is the virtual clock's own time (a served simulation's bag has the same stamps as
the robot's) and the wall clock's tick schedule from the episode's start; the headers' ``stamp`` fields
cannot serve, because protocol v2 stamps ``observe`` with the sender's monotonic clock and ``executed``
with the robot loop's clock (virtual seconds in a simulation). The server's compute time of each chunk
is in its diagnostics (``server_ms``).

Outcome: the server does not learn whether an episode succeeded. A served episode's outcome says how
its recording ended (``ended``: the next episode, the session closed or expired, the server stopped) and
what it held (observations, chunks, executed and held steps); ``success`` is null.

Threads: ``episode``/``observed`` come from the inference thread, ``executed``/``end_session`` from the
server's socket thread; a lock guards the table. Ending a recording (draining its writer, closing its
bag) runs on a thread of its own, so neither server thread waits for a disk.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any

import numpy as np

from policy_steer.recording.recorder import Recorder
from policy_steer.recording.sinks import BagSink, LiveView, refuse_existing
from policy_steer.types import OBS_IMAGES, OBS_STATE, STEP, Chunk, EpisodeContext, ExecutedStep, Observation


class _Episode:
    def __init__(self, recorder: Recorder, context: EpisodeContext | None) -> None:
        self.recorder = recorder
        self.context = context
        self.counts = {"observations": 0, "chunks": 0, "executed": 0, "held": 0}


class ServerRecording:
    """See the module docstring. ``root``: the bag folder (None: live only; an existing one is refused);
    ``live``: the Foxglove view (None: bags only); ``hz``: the policy's control rate (chunk row times)."""

    def __init__(self, root: str | Path | None, live: LiveView | None, hz: float, say=None) -> None:
        if root is None and live is None:
            raise ValueError("a server recording needs a bag folder or a live view")
        self.root = None if root is None else refuse_existing(root)
        self.live = live
        self.hz = float(hz)
        self.say = say
        self._lock = threading.Lock()
        self._current: dict[str, tuple[int, _Episode]] = {}
        self._closers: list[threading.Thread] = []

    def _open(self, session: str, episode: int, context: EpisodeContext | None) -> _Episode:
        sinks: list[Any] = [] if self.live is None else [self.live]
        if self.root is not None:
            sinks.append(BagSink(self.root / f"{session}_episode{episode:04d}"))
        ep = _Episode(Recorder(sinks, say=self.say), context)
        ep.recorder.start(context or EpisodeContext(), self.hz)
        return ep

    def _end(self, ep: _Episode, why: str) -> None:
        seed = None if ep.context is None else ep.context.seed
        outcome = {"success": None, "failure": None, "ended": why, "seed": seed, **ep.counts, "steps": ep.counts["executed"],
                   "n_chunks": ep.counts["chunks"], "stall_steps": ep.counts["held"], "clock": "robot"}

        def finish() -> None:
            ep.recorder.finish(outcome)
            ep.recorder.close()

        t = threading.Thread(target=finish, name="policy-steer-recording-close", daemon=True)
        t.start()
        self._closers.append(t)

    def _episode_of(self, session: str, episode: int, context: EpisodeContext | None = None) -> _Episode:
        """The recording of (session, episode), opened on first sight (an implicit episode has no context)."""
        cur = self._current.get(session)
        if cur is not None and cur[0] == episode:
            return cur[1]
        if cur is not None:
            self._end(cur[1], f"the robot started episode {episode}")
        ep = self._open(session, episode, context)
        self._current[session] = (episode, ep)
        return ep

    # --- the server's events ----------------------------------------------------------------------
    def episode(self, session: str, episode: int, context: EpisodeContext | None) -> None:
        with self._lock:
            self._episode_of(session, episode, context)

    def observed(self, session: str, episode: int, obs: Observation, chunk: Chunk, compute_s: float) -> None:
        """An observation and the chunk computed for it (``compute_s``: from its arrival to the chunk)."""
        with self._lock:
            ep = self._episode_of(session, episode)
        step = int(obs.get(STEP, 0))
        stamp = step / self.hz
        # the cameras here; the state (joints, ee, path) from every executed step, which carries it
        ep.recorder.record_observation(step, {k: v for k, v in obs.items() if k.startswith(OBS_IMAGES + ".")}, stamp)
        ee_start = None
        robot = None if ep.context is None else ep.context.robot
        if robot is not None and OBS_STATE in obs and "ee_pos" in robot.state_layout:
            ee_start = np.asarray(obs[OBS_STATE], dtype=np.float64)[robot.state_layout["ee_pos"]]
        info = chunk.info or {}
        ep.recorder.record_chunk(chunk, stamp, ee_start, {
            "obs_step": step, "start_step": int(chunk.start_step), "latency_ms": info.get("latency_ms"),
            "server_ms": compute_s * 1e3, "queued": True, "dropped": None, "error": None,
        })
        ep.counts["observations"] += 1
        ep.counts["chunks"] += 1

    def executed(self, session: str, episode: int, step: ExecutedStep) -> None:
        with self._lock:
            cur = self._current.get(session)
        if cur is None or cur[0] != episode:
            return  # an executed step of an episode this server did not see start (it is counted by the server)
        ep = cur[1]
        stamp = step.step / self.hz
        if step.state is not None:  # the measured state before the action: joints, ee, path of every step
            ep.recorder.record_observation(step.step, {OBS_STATE: step.state}, stamp)
        ep.recorder.record_executed(dataclasses.replace(step, stamp=stamp))
        ep.counts["executed"] += 1
        ep.counts["held"] += int(step.held)

    def end_session(self, session: str, why: str) -> None:
        with self._lock:
            cur = self._current.pop(session, None)
        if cur is not None:
            self._end(cur[1], f"session closed: {why}")

    def close(self, why: str = "the server stopped", timeout_s: float = 10.0) -> None:
        """End every recording and wait (up to ``timeout_s``) for their bags to be closed."""
        with self._lock:
            current, self._current = self._current, {}
        for _, ep in current.values():
            self._end(ep, why)
        for t in self._closers:
            t.join(timeout_s)
        if self.live is not None:
            self.live.stop()
