"""The recorder: what the control loop sees and does, to ROS 2 messages, off the control thread.

One job: take a run's events as data and hand them, as messages (:mod:`~policy_steer.recording.messages`),
to sinks (:mod:`~policy_steer.recording.sinks`: a rosbag2/MCAP folder, a live Foxglove server), without
ever slowing the loop down.

Contract:

- :class:`Recorder` is a :class:`~policy_steer.runtime.loop.LoopObserver` (``started``, ``context``,
  ``observed``, ``chunk``, ``stepped``, ``ended``); a server, which has no loop, calls the same data-level
  methods (``record_observation``, ``record_chunk``, ``record_executed``, ``start``, ``finish``).
  Everything arrives with the loop's clock stamps (virtual seconds in simulation, the monotonic clock on
  a robot): they become the bag's timestamps, so a bag replays at the rate the robot lived it.
- The control thread only copies the little it must (the state vector, the camera frames) and puts one
  tuple on a bounded queue (``queue_size``) with ``put_nowait``: it never waits and never writes. When
  the queue is full (a slow disk) the event is dropped and counted (``dropped``, per kind in
  ``dropped_by_kind``); the robot's actions never pass through here, so only telemetry can be lost.
  The end of an episode (its outcome) waits up to ``end_timeout_s`` for room: the loop is over by then.
- A writer thread builds and serialises the messages and writes them to every sink. A sink that
  raises OSError (a full disk: ENOSPC, a file-size limit: EFBIG) is closed as far as it can be and
  dropped; the recorder says so once, naming the sink and the error, through ``say`` (stderr by
  default), keeps ``error``, and from then on discards what only that sink would have taken. The loop
  never sees the error.
- ``close()`` (after ``ended``/``finish``) waits for the writer, closes the sinks (the bag's
  ``metadata.yaml``, with the outcome and the drop counts in ``custom_data``) and returns the recording's
  figures. A recording whose sink failed is incomplete: its folder may lack ``metadata.yaml``.

Candidate trajectories need every candidate's actions in the chunk's info: the owner of the policy
turns on :attr:`~policy_steer.steered_policy.SteeredPolicy.keep_candidates` while it records (without
it the markers show the executed chunk and the scene only).
"""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
from typing import Any, Callable

import numpy as np

from policy_steer.recording import messages as m
from policy_steer.recording.sinks import Sink
from policy_steer.types import OBS_IMAGES, OBS_STATE, Chunk, EpisodeContext, ExecutedStep, Observation

_END = "end"


class Recorder:
    """See the module docstring. ``sinks``: where messages go (the recorder closes them at the end of
    its episode; a :class:`~policy_steer.recording.sinks.LiveView` survives that)."""

    def __init__(
        self,
        sinks: list[Sink],
        queue_size: int = 2048,
        say: Callable[[str], None] | None = None,
        end_timeout_s: float = 10.0,
    ) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self.sinks = list(sinks)
        self.say = say or (lambda line: print(line, file=sys.stderr, flush=True))
        self.end_timeout_s = float(end_timeout_s)
        self.dropped = 0
        self.dropped_by_kind: dict[str, int] = {}
        self.written = 0
        self.error: str | None = None
        self.outcome: dict[str, Any] | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._closed = False
        # the writer thread's state
        self._ctx = EpisodeContext()
        self._hz = 10.0
        self._path: list[tuple[float, np.ndarray]] = []
        self._ee_slice: slice | None = None
        self._thread = threading.Thread(target=self._run, name="policy-steer-recorder", daemon=True)
        self._thread.start()

    # --- the control thread (never blocks) --------------------------------------------------------
    def _put(self, kind: str, payload: Any) -> None:
        try:
            self._queue.put_nowait((kind, payload))
        except queue.Full:
            self.dropped += 1
            self.dropped_by_kind[kind] = self.dropped_by_kind.get(kind, 0) + 1

    def start(self, context: EpisodeContext, hz: float) -> None:
        """An episode begins with ``context`` at ``hz`` control steps per second."""
        self._put("start", (context, float(hz)))

    def update_context(self, context: EpisodeContext, stamp: float) -> None:
        self._put("context", (context, float(stamp)))

    def record_observation(self, step: int, obs: Observation, stamp: float) -> None:
        """The state vector and every camera frame (``observation.images.<camera>``) of ``obs``."""
        state = np.array(obs[OBS_STATE], dtype=np.float64, copy=True) if OBS_STATE in obs else None
        prefix = OBS_IMAGES + "."
        frames = {k[len(prefix):]: np.array(v, dtype=np.uint8, copy=True) for k, v in obs.items() if k.startswith(prefix)}
        self._put("obs", (int(step), state, frames, float(stamp)))

    def record_chunk(self, chunk: Chunk | None, stamp: float, ee_start: Any | None, figures: dict[str, Any]) -> None:
        """A chunk arrived (None: the request failed); ``ee_start`` [3]: the end effector it was
        conditioned on; ``figures``: what became of it (queued, dropped and why, latency, delay)."""
        self._put("chunk", (chunk, float(stamp), None if ee_start is None else np.asarray(ee_start, dtype=np.float64), dict(figures)))

    def record_executed(self, executed: ExecutedStep, estimate_error: float | None = None) -> None:
        """What went to the robot at a control step (``executed.stamp``: when)."""
        self._put("step", (executed, estimate_error))

    def finish(self, outcome: dict[str, Any]) -> None:
        """The episode's outcome (success, failure, steps, ...): the last event; waits for room."""
        try:
            self._queue.put(("end", dict(outcome)), timeout=self.end_timeout_s)
        except queue.Full:
            self.dropped += 1
            self.dropped_by_kind[_END] = self.dropped_by_kind.get(_END, 0) + 1
            self._queue.put(("end", dict(outcome)))  # the outcome must land: the writer is behind but alive

    # --- the loop's observer (policy_steer.runtime.loop.LoopObserver) -----------------------------
    def started(self, context: EpisodeContext, hz: float) -> None:
        self.start(context, hz)

    def context(self, context: EpisodeContext, stamp: float) -> None:
        self.update_context(context, stamp)

    def observed(self, step: int, obs: Observation, stamp: float) -> None:
        self.record_observation(step, obs, stamp)

    def chunk(self, record: Any, chunk: Chunk | None, stamp: float) -> None:
        figures = {
            "obs_step": record.obs_step, "start_step": record.start_step, "state_kind": record.state_kind,
            "delay_steps": record.delay_steps, "delay_estimate": record.delay_estimate, "latency_ms": record.latency_ms,
            "round_trip_ms": None if record.latency_s is None else record.latency_s * 1e3,
            "queued": record.chunk_id is not None, "dropped": record.dropped, "error": record.error,
        }
        self.record_chunk(chunk, stamp, record.assumed_ee, figures)

    def stepped(self, record: Any, executed: ExecutedStep) -> None:
        err = None
        if record.assumed_ee is not None:
            err = float(np.linalg.norm(np.asarray(record.assumed_ee) - np.asarray(record.ee)))
        self.record_executed(executed, err)

    def ended(self, result: Any) -> None:
        s = result.summary()
        outcome = {k: s[k] for k in ("seed", "success", "failure", "steps", "completion_steps", "stall_steps",
                                     "n_chunks", "dropped", "failed", "seam_jump", "state_estimate_error", "late_ticks")}
        outcome["clock"] = result.clock
        self.finish(outcome)

    # --- the end ----------------------------------------------------------------------------------
    def close(self, timeout_s: float | None = None) -> dict[str, Any]:
        """Wait for the writer (after ``finish``), close the sinks; the recording's figures."""
        if not self._closed:
            self._closed = True
            self._thread.join(timeout_s)
            if self._thread.is_alive():  # a hung disk: the caller goes on; the bag stays incomplete, said once
                self.error = self.error or (f"recording: the writer did not finish within {timeout_s:g} s "
                                            f"({self._queue.qsize()} events left); the bag may lack its metadata")
                self.say(self.error)
        return {
            "written": self.written, "dropped": self.dropped, "dropped_by_kind": dict(self.dropped_by_kind),
            "error": self.error, "outcome": self.outcome, "sinks": [s.name for s in self.sinks],
        }

    # --- the writer thread ------------------------------------------------------------------------
    def _run(self) -> None:
        handlers = {"start": self._on_start, "context": self._on_context, "obs": self._on_obs,
                    "chunk": self._on_chunk, "step": self._on_step}
        while True:
            kind, payload = self._queue.get()
            if kind == _END:
                self._end(payload)
                return
            try:
                handlers[kind](payload)
                time.sleep(0)  # let the control thread take the GIL between messages (not after a 5 ms switch interval)
            except Exception as e:  # noqa: BLE001 - a message that cannot be built is reported, never the loop's problem
                self.dropped_by_kind[f"{kind}:error"] = self.dropped_by_kind.get(f"{kind}:error", 0) + 1
                if self.error is None:
                    self.error = f"recording: could not record a {kind} event: {type(e).__name__}: {e}"
                    self.say(self.error)

    def _emit(self, topic: str, typename: str, stamp: float, msg: Any) -> None:
        if not self.sinks:
            return
        data = m.serialize(msg, typename)
        ns = m.to_ns(stamp)
        for sink in list(self.sinks):
            try:
                sink.write(topic, typename, ns, data)
            except OSError as e:
                self._fail(sink, e)
        self.written += 1

    def _fail(self, sink: Sink, e: OSError) -> None:
        self.sinks.remove(sink)
        why = e.strerror or str(e)
        line = f"recording: {sink.name}: {why} (errno {e.errno}); this recording ends here, the robot keeps running"
        self.error = self.error or line
        self.say(line)
        try:
            sink.close({})
        except Exception:  # noqa: BLE001 - closing a sink that just failed may fail again; it is already reported
            pass

    def _on_start(self, payload: tuple[EpisodeContext, float]) -> None:
        self._ctx, self._hz = payload
        self._path = []
        robot = self._ctx.robot
        self._ee_slice = None if robot is None else robot.state_layout.get("ee_pos")
        scene = self._ctx.scene
        if scene is not None:
            self._emit(m.TF, m.TOPICS[m.TF], self._ctx.stamp, m.tf_message(m.scene_transforms(self._ctx.stamp, scene)))

    def _on_context(self, payload: tuple[EpisodeContext, float]) -> None:
        ctx, stamp = payload
        moved = ctx.scene is not None and (self._ctx.scene is None or ctx.scene.to_dict() != self._ctx.scene.to_dict())
        self._ctx = ctx
        if moved:
            self._emit(m.TF, m.TOPICS[m.TF], stamp, m.tf_message(m.scene_transforms(stamp, ctx.scene)))

    def _on_obs(self, payload: tuple[int, np.ndarray | None, dict[str, np.ndarray], float]) -> None:
        step, state, frames, stamp = payload
        robot = self._ctx.robot
        if state is not None and robot is not None:
            self._emit(m.JOINT_STATES, m.TOPICS[m.JOINT_STATES], stamp, m.joint_states(stamp, state, robot))
        if state is not None and self._ee_slice is not None:
            ee = state[self._ee_slice]
            self._emit(m.TF, m.TOPICS[m.TF], stamp, m.tf_message([m.transform(stamp, m.EE_FRAME, ee)]))
            self._path.append((stamp, ee))
        for cam, frame in frames.items():
            self._emit(m.camera_topic(cam), m.IMAGE_TYPE, stamp, m.image(stamp, frame, cam))

    def _on_chunk(self, payload: tuple[Chunk | None, float, np.ndarray | None, dict[str, Any]]) -> None:
        chunk, stamp, ee_start, figures = payload
        if self._path:  # the path so far, with every chunk (per step it would grow the bag quadratically)
            self._emit(m.EXECUTED_PATH, m.TOPICS[m.EXECUTED_PATH], stamp, m.path(stamp, self._path))
        level, message = m.OK, "queued"
        if chunk is None:
            level, message = m.ERROR, f"request failed: {figures.get('error')}"
        elif figures.get("dropped"):
            level, message = m.WARN, f"dropped: {figures['dropped']}"
        values = {k: v for k, v in figures.items() if v is not None and k not in ("error", "dropped")}
        if chunk is not None:
            info = chunk.info or {}
            values.update({k: info[k] for k in ("candidates", "winner", "prepare_ms") if k in info})
            values["strategies"] = json.dumps(info.get("strategies", {}), sort_keys=True)
            for name, figs in (info.get("steer") or {}).items():
                for k, v in (figs or {}).items():
                    if isinstance(v, (int, float)) and not isinstance(v, bool):
                        values[f"{name}.{k}"] = v
            self._emit(m.CHUNK, m.TOPICS[m.CHUNK], stamp, m.joint_trajectory(stamp, chunk.actions, self._hz, self._ctx.robot))
            self._emit(m.CANDIDATES, m.TOPICS[m.CANDIDATES], stamp,
                       m.candidate_markers(stamp, chunk.actions, info, ee_start, self._ctx.robot, self._ctx.scene))
            self._emit(m.FIGURES_TOPIC, m.TOPICS[m.FIGURES_TOPIC], stamp, m.figures(info, figures.get("delay_steps")))
        self._emit(m.DIAGNOSTICS, m.TOPICS[m.DIAGNOSTICS], stamp,
                   m.diagnostics(stamp, [m.status("policy_steer/chunk", level, message, values)]))

    def _on_step(self, payload: tuple[ExecutedStep, float | None]) -> None:
        ex, estimate_error = payload
        statuses = []
        if ex.held:
            statuses.append(m.status("policy_steer/hold", m.WARN, "hold: nothing queued (stall)", {"step": ex.step}))
        if ex.safety:
            statuses.append(m.status("policy_steer/safety", m.WARN, f"safety: {ex.safety}", {
                "step": ex.step, "commanded": np.round(ex.commanded, 5).tolist(), "executed": np.round(ex.action, 5).tolist()}))
        if estimate_error is not None:
            statuses.append(m.status("policy_steer/future_state", m.OK, "future-state error (m)",
                                     {"step": ex.step, "error_m": estimate_error}))
        if statuses:
            self._emit(m.DIAGNOSTICS, m.TOPICS[m.DIAGNOSTICS], ex.stamp, m.diagnostics(ex.stamp, statuses))

    def _end(self, outcome: dict[str, Any]) -> None:
        outcome = {**outcome, "recorder_dropped": self.dropped, "recorder_error": self.error}
        if self.sinks:
            stamp = self._path[-1][0] if self._path else self._ctx.stamp
            if self._path:  # the whole measured path, once more at the end
                self._emit(m.EXECUTED_PATH, m.TOPICS[m.EXECUTED_PATH], stamp, m.path(stamp, self._path))
            level = m.WARN if self.dropped else m.OK
            self._emit(m.DIAGNOSTICS, m.TOPICS[m.DIAGNOSTICS], stamp, m.diagnostics(stamp, [m.status(
                "policy_steer/recorder", level, f"{self.dropped} events dropped", {"dropped": self.dropped, **self.dropped_by_kind})]))
            self._emit(m.EPISODE, m.TOPICS[m.EPISODE], stamp, m.episode(outcome))
        self.outcome = outcome
        custom = {"policy_steer.outcome": json.dumps(outcome, sort_keys=True, default=m._json),
                  "policy_steer.instruction": self._ctx.instruction or "",
                  "policy_steer.task": self._ctx.task or "", "policy_steer.variant": self._ctx.variant or ""}
        for sink in list(self.sinks):
            try:
                sink.close(custom)
            except OSError as e:
                self._fail(sink, e)
