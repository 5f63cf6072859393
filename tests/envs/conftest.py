"""Shared helpers of the env tests: expert episodes and replays."""

from __future__ import annotations

import numpy as np
import pytest

PLAIN_TASKS = ("reach", "push", "pick-place")


def expert_episode(env, seed: int):
    """(actions [T, A], ee positions [T + 1, 3], states [T + 1, S], final info) of the scripted expert."""
    from policy_steer.envs.experts import make_expert

    expert = make_expert(env.unwrapped.task)
    obs, info = env.reset(seed=seed)
    expert.reset(env, seed)
    actions, states = [], [obs["observation.state"]]
    while True:
        a = expert.act(obs)
        obs, _, terminated, truncated, info = env.step(a)
        actions.append(a)
        states.append(obs["observation.state"])
        if terminated or truncated:
            break
    states = np.array(states)
    return np.array(actions), states[:, :3], states, info


def replay(env, seed: int, actions: np.ndarray):
    """Replay ``actions`` from a seeded reset until the episode ends; returns (steps run, final info)."""
    env.reset(seed=seed)
    info: dict = {}
    for k, a in enumerate(actions):
        _, _, terminated, truncated, info = env.step(a)
        if terminated or truncated:
            return k + 1, info
    return len(actions), info


@pytest.fixture(scope="module")
def nominal_envs():
    from policy_steer.envs import make

    envs = {t: make(t) for t in PLAIN_TASKS}
    yield envs
    for e in envs.values():
        e.close()
