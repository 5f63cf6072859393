"""The simulated task behind the safety layer runs the benchmark's episode, step for step.

The same tiny policy and seeds through the one control loop on the virtual clock, twice: on
:class:`~policy_steer.runtime.robot.SimRobot` (what ``policy-steer bench`` runs) and on the robot
host's :class:`~policy_steer.hardware.safety.SafetyLayer` over the simulated-task driver, with the
chunks validated by its guard (what ``policy-steer sim-robot`` runs). Every executed action, every
measured state and the outcome are identical: the safety layer passes a valid row to the simulator as
the very same numbers, and the host sends the same episode context (VLS steers from it the same way).
"""

from __future__ import annotations

import numpy as np
import pytest

from policy_steer.hardware.drivers.sim_task import SimTaskArm
from policy_steer.hardware.observation import ObservationMap
from policy_steer.hardware.safety import SafetyLayer
from policy_steer.hardware.spaces import make_space
from policy_steer.runtime.chunk_source import LocalChunkSource
from policy_steer.runtime.loop import ControlLoop, LoopConfig, VirtualClock
from policy_steer.runtime.robot import SimRobot

STEPS = 40


@pytest.fixture(scope="module")
def push_checkpoint(tmp_path_factory):
    from policy_steer import envs
    from tests.runtime.conftest import build_env_policy

    u = envs.make("push", "obstacle").unwrapped
    return build_env_policy(tmp_path_factory.mktemp("push_parity"), u.state_dim, u.state_dim - u.robot_state_dim,
                            u.action_dim, u.max_step)


def steered(checkpoint, steer: str):
    from policy_steer.policies.loading import load_policy
    from policy_steer.steered_policy import SteeredPolicy

    settings = {"particles": 2} if steer == "vls" else {}
    return SteeredPolicy.from_method(load_policy(checkpoint), steer, settings)


def bench_episode(checkpoint, steer: str, seed: int, mode: str):
    from policy_steer import envs

    robot = SimRobot(envs.make("push", "obstacle", render_mode=None, max_episode_steps=STEPS))
    source = LocalChunkSource(steered(checkpoint, steer), inline=True)
    loop = ControlLoop(robot, source, VirtualClock("1" if mode == "vlash" else "0"),
                       LoopConfig(mode=mode, max_steps=STEPS))
    return loop.run(seed=seed)


def host_episode(checkpoint, steer: str, seed: int, mode: str):
    arm = SimTaskArm("push", "obstacle", max_episode_steps=STEPS)
    arm.connect()
    space = make_space("auto", arm, arm.control_hz, arm.action_dim)
    safety = SafetyLayer(arm, space, ObservationMap(arm, "native", instruction=arm.instruction), use_watchdog=False)
    source = safety.guard(LocalChunkSource(steered(checkpoint, steer), inline=True))
    loop = ControlLoop(safety, source, VirtualClock("1" if mode == "vlash" else "0"),
                       LoopConfig(mode=mode, max_steps=STEPS))
    return loop.run(seed=seed), arm


@pytest.mark.parametrize("steer, mode", [("none", "sync"), ("none", "vlash"), ("vls", "sync")])
def test_the_host_runs_the_benchmarks_episode(push_checkpoint, steer, mode):
    for seed in (0, 1):
        ref = bench_episode(push_checkpoint, steer, seed, mode)
        got, arm = host_episode(push_checkpoint, steer, seed, mode)
        assert got.steps == ref.steps and got.success == ref.success and got.failure == ref.failure
        assert [r.action for r in got.records] == [r.action for r in ref.records]
        assert [r.ee for r in got.records] == [r.ee for r in ref.records]
        assert [r.chunk_id for r in got.records] == [r.chunk_id for r in ref.records]
        # a row reaches the simulator as its own numbers; one aiming outside the workspace is clamped there by
        # the safety layer, exactly as the task clamps it itself (the states above stay identical)
        sent = list(arm.sent)
        assert len(sent) == got.steps
        clean = [(s_, r) for s_, r in zip(sent, got.records) if r.intervention is None]
        assert clean and all(np.array_equal(s_, np.float32(r.action)) for s_, r in clean)
        if steer == "vls":
            assert all(c.info["strategies"] == {"vls": True} for c in got.chunks if c.chunk_id is not None)
