"""Test doubles of the runtime tests: a point robot and a policy whose chunks say where they came from."""

from __future__ import annotations

import threading
import time

import numpy as np

from policy_steer.runtime.future_state import RobotDescription
from policy_steer.runtime.robot import Robot
from policy_steer.types import Chunk, PolicySpec

H, K, A = 8, 4, 3


class PointRobot(Robot):
    """A point that moves by each delta action; state = position (3) + a gripper slot + a task slot."""

    control_hz = 50.0

    def __init__(self) -> None:
        self.description = RobotDescription(
            action_mode="delta", state_layout={"ee_pos": slice(0, 3), "gripper": slice(3, 4)}, robot_state_dim=4,
        )
        self.pos = np.zeros(3, np.float32)
        self.acted: list[tuple[float, np.ndarray]] = []
        self.thread: set[str] = set()

    def reset(self, seed=None):
        self.pos[:] = 0
        return self.observe()

    def observe(self):
        self.thread.add(threading.current_thread().name)
        return {"observation.state": np.concatenate([self.pos, [1.0, 0.0]]).astype(np.float32), "task": "t"}

    def act(self, action):
        self.acted.append((time.monotonic(), np.array(action)))
        self.pos += np.asarray(action, np.float32)


class TaggedPolicy:
    """Chunks whose rows say (request serial, row); slow by a schedule; one request fails."""

    spec = PolicySpec(name="tagged", family="flow", horizon=H, action_dim=A, n_action_steps=K, num_steps=1,
                      control_hz=50.0)
    wants_prefix = False

    def __init__(self, delays: list[float], fail_at: int | None = None) -> None:
        self.delays, self.fail_at, self.serial = delays, fail_at, 0
        self.threads: set[str] = set()
        self.contexts: list = []

    def start_episode(self, context=None, seed=None):
        self.serial = 0
        self.contexts.append(("start", context, seed))
        return {}

    def update_context(self, context):
        self.contexts.append(("update", context, None))

    def predict_chunk(self, obs, prefix=None, start_step=None):
        self.threads.add(threading.current_thread().name)
        self.serial += 1
        time.sleep(self.delays[(self.serial - 1) % len(self.delays)])
        if self.serial == self.fail_at:
            raise RuntimeError("the policy server fell over")
        rows = np.arange(H, dtype=np.float32)
        return Chunk(np.stack([np.full(H, self.serial, np.float32), rows, np.zeros(H, np.float32)], 1), start_step)
