"""Task names, variants, make() and gymnasium registration."""

from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import pytest

from policy_steer.envs import TASKS, VARIANTS, make
from policy_steer.errors import ConfigError


def test_tasks_and_variants_are_the_documented_ones():
    assert list(TASKS) == ["reach", "push", "pick-place", "lift", "stack"]
    assert TASKS["push"] == "PolicySteer/Push-v0"
    assert VARIANTS == ("nominal", "obstacle", "shifted-surface", "clutter", "moving-goal")
    for gym_id in TASKS.values():
        assert gym_id in gym.registry


def test_unknown_task_and_variant_name_the_choices():
    with pytest.raises(ConfigError, match="unknown task 'stacking'.*reach.*push.*pick-place.*stack"):
        make("stacking")
    with pytest.raises(ConfigError, match="unknown variant 'windy'.*nominal.*obstacle.*moving-goal"):
        make("push", "windy")
    with pytest.raises(ConfigError, match="unknown camera"):
        make("reach", cameras=("top",))
    with pytest.raises(ConfigError, match="action_mode"):
        make("reach", action_mode="velocity")


def test_gym_make_builds_the_same_env_as_make():
    env = gym.make("PolicySteer/PickPlace-v0", variant="clutter", disable_env_checker=True)
    u = env.unwrapped
    assert (u.task, u.variant, u.action_dim) == ("pick-place", "clutter", 4)
    ours = make("pick-place", "clutter")
    o1, _ = env.reset(seed=5)
    o2, _ = ours.reset(seed=5)
    assert (o1["observation.state"] == o2["observation.state"]).all()
    env.close()
    ours.close()


def test_import_is_light():
    code = (
        "import sys, policy_steer.envs as e; "
        "heavy = [m for m in ('torch', 'mujoco', 'robosuite', 'lerobot') if m in sys.modules]; "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
