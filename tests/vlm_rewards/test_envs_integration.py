"""The offline synthesizer and the session against the real task envs: every task and variant."""

from __future__ import annotations

import pytest

from policy_steer import envs
from policy_steer.envs.experts import make_expert
from policy_steer.vlm_rewards import RewardSession, program_schema
from policy_steer.vlm_rewards.synthesis import OfflineSynthesizer
from tests.vlm_rewards.test_offline import check_program


# The skill the offline rules read from an env task's instruction: a program names its skill, not the env
# ("pick up the red cube and place it on the green cube" is a pick-and-place onto cube B's top).
SKILL = {"stack": "pick-place"}


def _make(task: str, variant: str):
    return envs.make(task, variant, render_mode=None)


@pytest.mark.parametrize("task", list(envs.TASKS))
@pytest.mark.parametrize("variant", list(envs.VARIANTS))
def test_offline_program_for_every_env_task_and_variant(task, variant):
    import jsonschema

    env = _make(task, variant)
    try:
        for seed in (0, 1):
            env.reset(seed=seed)
            scene = env.unwrapped.scene()
            program = OfflineSynthesizer().synthesize(scene)
            check_program(program, scene, SKILL.get(task, task))
            jsonschema.validate(program.to_dict(), program_schema(scene))
    finally:
        env.close()


@pytest.mark.parametrize(
    "task,variant,expected",
    [
        ("push", "nominal", [(0, 1)]),
        ("push", "moving-goal", [(0, 1)]),
        ("pick-place", "nominal", [(0, 1), (1, 2), (2, 3)]),
        ("lift", "nominal", [(0, 1)]),
    ],
)
def test_session_follows_the_scripted_expert_through_the_stages(task, variant, expected):
    env = _make(task, variant)
    expert = make_expert(task)
    try:
        obs, _ = env.reset(seed=1)
        expert.reset(env, 1)
        scene = env.unwrapped.scene()
        session = RewardSession(OfflineSynthesizer().synthesize(scene), scene)
        for _ in range(env.unwrapped.max_episode_steps):
            obs, _, terminated, truncated, info = env.step(expert.act(obs))
            session.update(env.unwrapped.scene())
            if terminated or truncated:
                break
        assert info["success"]
        assert [(e["from"], e["to"]) for e in session.events] == expected
        assert "gripper close" in [e["why"] for e in session.events] or task == "push"
    finally:
        env.close()


@pytest.mark.slow
@pytest.mark.parametrize("task", list(envs.TASKS))
@pytest.mark.parametrize("variant", list(envs.VARIANTS))
def test_many_seeds_programs_and_sessions_with_the_expert(task, variant):
    """20 seeds per task and variant: a valid program each time, and a session that keeps up with the
    scripted expert for the whole episode without errors (stage switches are not asserted here: on
    shift variants the expert itself may fail)."""
    env = _make(task, variant)
    expert = make_expert(task)
    try:
        for seed in range(20):
            obs, _ = env.reset(seed=seed)
            expert.reset(env, seed)
            scene = env.unwrapped.scene()
            program = OfflineSynthesizer().synthesize(scene)
            check_program(program, scene, SKILL.get(task, task))
            session = RewardSession(program, scene)
            for _ in range(env.unwrapped.max_episode_steps):
                obs, _, terminated, truncated, _ = env.step(expert.act(obs))
                session.update(env.unwrapped.scene())
                if terminated or truncated:
                    break
            assert 0.0 <= session.progress <= 1.0
    finally:
        env.close()
