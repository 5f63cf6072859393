"""Scripted experts: success rates on nominal, episode lengths, and the two modes of push."""

from __future__ import annotations

import numpy as np
import pytest

from policy_steer.envs import make
from policy_steer.envs.experts import make_expert
from policy_steer.errors import ConfigError

from .conftest import PLAIN_TASKS, expert_episode

# Episode lengths (control steps) the demonstrations should have: short, like a teleoperator's.
LENGTHS = {"reach": (25, 60), "push": (35, 100), "pick-place": (50, 100)}


def _success_rate(task: str, seeds: range) -> tuple[int, list[int]]:
    env = make(task)
    wins, lengths = 0, []
    for seed in seeds:
        actions, _, _, info = expert_episode(env, seed)
        wins += bool(info["success"])
        lengths.append(len(actions))
    env.close()
    return wins, lengths


@pytest.mark.parametrize("task", PLAIN_TASKS)
def test_expert_solves_nominal_short(task):
    wins, lengths = _success_rate(task, range(1000, 1010))
    assert wins >= 9
    lo, hi = LENGTHS[task]
    assert lo <= np.median(lengths) <= hi


@pytest.mark.slow
@pytest.mark.parametrize("task", PLAIN_TASKS)
def test_expert_solves_nominal_95_percent_of_50(task):
    wins, _ = _success_rate(task, range(50))
    assert wins >= 48  # >= 95 %


def test_push_demonstrations_go_round_both_sides():
    """The seed picks the side; the tip really passes the block on that side (multimodal data)."""
    env = make("push")
    u = env.unwrapped
    sides = set()
    for seed in range(12):
        _, ee, states, info = expert_episode(env, seed)
        assert info["success"]
        block0 = states[0, u.state_layout["block_pos"]][:2]
        target = states[0, u.state_layout["target"]][:2]
        side = u.layout.mode
        # Signed lateral offset of the tip from the block -> target line while it is beside the block,
        # before the block has moved.
        d = (target - block0) / np.linalg.norm(target - block0)
        normal = np.array([-d[1], d[0]])
        normal = normal if normal[1] >= 0 else -normal  # points to +y
        still = np.linalg.norm(states[:, u.state_layout["block_pos"]][:, :2] - block0, axis=1) < 1e-3
        beside = still & (np.abs((ee[:, :2] - block0) @ d) < 0.02)
        lateral = (ee[beside, :2] - block0) @ normal
        assert beside.any() and np.sign(np.median(lateral)) == side
        assert np.abs(lateral).min() > 0.05  # well clear of the block, not through it
        sides.add(side)
    assert sides == {-1, 1}


def test_make_expert_unknown_task():
    with pytest.raises(ConfigError, match="no scripted expert"):
        make_expert("juggle")
