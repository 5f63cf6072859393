"""Robot-side telemetry: what a robot process executed, and what happened to it, on its own PUB socket.

Protocol v2 has the robot report every executed action to the policy server (``executed``,
:meth:`~policy_steer.transport.client.PolicyClient.report_executed`), which republishes it on the
server's telemetry (topic ``executed``), so one subscription to the server sees the whole loop. A
robot process may also bind its **own** PUB endpoint, with the same framing as the server's telemetry
(a topic frame, then a msgpack header with ``session``, then raw arrays), for what the server never
sees (its link to the server may be down) and publishes two topics:

- ``action``: every executed action (held or not), with its control step, the id and row of the chunk
  it came from, and the monotonic stamp at which it was commanded;
- ``event``: holds, reconnects, request failures, dropped chunks, safety interventions, episode ends.

Publishing never blocks the control thread: messages go through a queue to a thread that owns the
socket (ZeroMQ sockets must stay on one thread), and a subscriber that falls behind loses messages at
the high-water mark.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import numpy as np
import zmq

from policy_steer.errors import ConfigError
from policy_steer.transport.telemetry import TelemetryPublisher

ROBOT_TOPICS = ("action", "event")
CLOSE_LINGER_MS = 1000


class RobotTelemetry:
    """A PUB socket bound at ``endpoint`` (``tcp://127.0.0.1:*`` picks a port), fed from any thread.

    ``session`` (the policy session the robot currently holds; "" before the first welcome) and
    ``robot`` (its name) go into every header, as do the keyword fields given to :meth:`action` and
    :meth:`event`. ``episode`` is set by the owner at each reset.
    """

    def __init__(self, endpoint: str, robot: str = "robot", hwm: int = 1000) -> None:
        self.robot = robot
        self.session = ""
        self.episode = 0
        self.endpoint: str | None = None
        self.published = 0
        self._queue: queue.SimpleQueue[tuple[str, dict[str, Any], dict[str, np.ndarray]] | None] = queue.SimpleQueue()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(endpoint, hwm), name="robot-telemetry", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise ConfigError(f"robot telemetry: cannot bind {endpoint}: {self._error}") from None

    def action(
        self,
        step: int,
        action: np.ndarray,
        chunk_id: int | None,
        index: int | None,
        stamp: float,
        commanded: np.ndarray | None = None,
        **fields: Any,
    ) -> None:
        """One executed action: ``action`` as sent to the actuators, ``commanded`` as the loop asked
        (they differ when the safety layer intervened). ``chunk_id`` None means a hold."""
        arrays = {"action": np.array(action, dtype=np.float32)}
        if commanded is not None:
            arrays["commanded"] = np.array(commanded, dtype=np.float32)
        header = {
            "step": int(step),
            "chunk_id": chunk_id,
            "index": index,
            "held": chunk_id is None,
            "stamp": float(stamp),
            **fields,
        }
        self._put("action", header, arrays)

    def event(self, event: str, **fields: Any) -> None:
        """A named event (``hold``, ``resumed``, ``reconnected``, ``safety``, ...) with its fields."""
        self._put("event", {"event": event, **fields}, {})

    def close(self, timeout_s: float = 2.0) -> None:
        """Send what is queued (best effort), then close the socket."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout_s)

    def __enter__(self) -> RobotTelemetry:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _put(self, topic: str, header: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        header = {"session": self.session, "robot": self.robot, "episode": self.episode, **header}
        header.setdefault("stamp", time.monotonic())
        self._queue.put((topic, header, arrays))

    def _run(self, endpoint: str, hwm: int) -> None:
        context = zmq.Context()
        try:
            pub = TelemetryPublisher(endpoint, context, hwm=hwm)
        except zmq.ZMQError as e:
            self._error = e
            self._ready.set()
            context.term()
            return
        self.endpoint = pub.endpoint
        self._ready.set()
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    break
                pub.publish(*item)
                self.published += 1
        finally:
            # the last messages (episode_end, the final actions) get up to CLOSE_LINGER_MS to reach the
            # subscribers; a subscriber that is gone or stuck cannot hold the process longer than that
            pub.close(linger_ms=CLOSE_LINGER_MS)
            context.term()
