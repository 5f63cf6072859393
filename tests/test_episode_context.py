"""The episode context as core vocabulary: plain-data round trip, the published schema, and the
refusals of SteeredPolicy.start_episode / configure (a strategy that cannot act is never run weaker
in silence)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from policy_steer.errors import (
    CONTEXT_MISMATCH,
    CONTEXT_REQUIRED,
    STEER_UNAVAILABLE,
    STEER_UNSUPPORTED,
    SteeringRefused,
    ValidationError,
)
from policy_steer.policies import load_policy
from policy_steer.scene import Scene
from policy_steer.schema import EPISODE_CONTEXT_SCHEMA
from policy_steer.steered_policy import SteeredPolicy
from policy_steer.types import EpisodeContext, RobotDescription

PUSH = "checkpoints/push-diffusion"


@pytest.fixture(scope="module")
def push_context() -> EpisodeContext:
    from policy_steer import envs

    env = envs.make("push", "obstacle", render_mode=None)
    try:
        env.reset(seed=3)
        return env.unwrapped.episode_context(seed=3)
    finally:
        env.close()


@pytest.fixture(scope="module")
def push_policy():
    return load_policy(PUSH)


def test_context_round_trips_through_json(push_context):
    data = json.loads(json.dumps(push_context.to_dict()))
    back = EpisodeContext.from_dict(data)
    assert back.scene == push_context.scene and back.scene.frame == "world"
    assert back.robot == push_context.robot  # rollout is local only (not compared, not sent)
    assert back.robot.rollout is None and push_context.robot.rollout is not None
    assert (back.task, back.variant, back.seed, back.instruction) == ("push", "obstacle", 3, push_context.instruction)
    assert back.robot.state_layout["ee_pos"] == push_context.robot.state_layout["ee_pos"]
    assert any(o.kind == "obstacle" for o in back.scene.objects)


def test_schema_file_is_valid_json_schema():
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(json.loads(EPISODE_CONTEXT_SCHEMA.read_text()))


@pytest.mark.parametrize("mutate,where", [
    (lambda d: d["scene"]["objects"][0].__setitem__("position", [0.0, 1.0]), "scene/objects/0/position"),
    (lambda d: d["scene"]["objects"][0].__setitem__("kind", "dragon"), "scene/objects/0/kind"),
    (lambda d: d["scene"].pop("objects"), "scene"),
    (lambda d: d.__setitem__("colour", "red"), "(top level)"),
    (lambda d: d["robot"]["state_layout"].__setitem__("ee_pos", [3]), "robot/state_layout/ee_pos"),
    (lambda d: d["scene"]["keypoints"].__setitem__("tip", ["a", 0, 0]), "scene/keypoints/tip/0"),
])
def test_a_context_failing_its_schema_names_the_place(push_context, mutate, where):
    d = json.loads(json.dumps(push_context.to_dict()))
    mutate(d)
    with pytest.raises(ValidationError, match=re.escape(f"at {where}")):
        EpisodeContext.from_dict(d)


def test_scene_alone_is_checked_too():
    with pytest.raises(ValidationError, match="scene fails its schema"):
        Scene.from_dict({"task": "push", "variant": "x", "instruction": "y", "objects": [{"name": "a"}]})


def test_vls_refuses_an_episode_without_a_scene_and_nothing_changes(push_policy, push_context):
    sp = SteeredPolicy.from_method(push_policy, "vls", {"particles": 2}, seed=0)
    with pytest.raises(SteeringRefused) as e:
        sp.start_episode(EpisodeContext(instruction="push the block"), seed=0)
    assert e.value.code == CONTEXT_REQUIRED and "no scene" in e.value.reason and e.value.strategy == "vls"
    assert sp.context is None
    info = sp.start_episode(push_context)
    assert info["strategies"] == ["vls"] and sp.context is push_context


def test_a_context_for_another_task_is_refused(push_policy, push_context):
    sp = SteeredPolicy.from_method(push_policy, "none", seed=0)
    assert push_policy.trained_task == "push"
    with pytest.raises(SteeringRefused) as e:
        sp.start_episode(EpisodeContext(task="pick-place", scene=push_context.scene, robot=push_context.robot))
    assert e.value.code == CONTEXT_MISMATCH and "pick-place" in str(e.value)


def test_taco_without_a_verifier_is_unavailable(push_policy, tmp_path):
    sp = SteeredPolicy.from_method(push_policy, "none", seed=0)
    with pytest.raises(SteeringRefused) as e:
        sp.configure(steer={"method": "taco", "verifier_path": str(tmp_path / "none")})
    assert e.value.code == STEER_UNAVAILABLE and sp.method == "none"


def test_a_sampler_the_family_lacks_is_unsupported(push_policy):
    with pytest.raises(SteeringRefused) as e:
        SteeredPolicy.from_method(push_policy, "none", sampler=None).sampler.policy.schedule.plan("euler")
    assert e.value.code == STEER_UNSUPPORTED and "diffusion" in e.value.reason


def test_configure_mid_episode_rechecks_the_context(push_policy):
    sp = SteeredPolicy.from_method(push_policy, "none", seed=0)
    sp.start_episode(EpisodeContext(instruction="push the block"))
    with pytest.raises(SteeringRefused) as e:
        sp.configure(steer={"method": "vls", "particles": 2})
    assert e.value.code == CONTEXT_REQUIRED and sp.method == "none" and sp.strategies == []


def test_chunks_say_which_strategies_acted_and_context_updates_reach_vls(push_policy, push_context):
    from policy_steer import envs

    env = envs.make("push", "obstacle", render_mode=None)
    obs, _ = env.reset(seed=3)
    sp = SteeredPolicy.from_method(push_policy, "vls", {"particles": 2}, seed=0)
    sp.start_episode(push_context)
    chunk = sp.predict_chunk({**obs, "task": push_context.instruction, "step": 0})
    assert chunk.info["strategies"] == {"vls": True} and np.isfinite(chunk.info["steer"]["vls"]["reward_best"])
    moved = push_context.scene
    block = moved.object("block")
    block.position = [block.position[0] + 0.05, block.position[1], block.position[2]]
    sp.update_context(push_context.with_scene(moved, stamp=1.0))
    assert sp.strategies[0].episode._scene is moved  # the strategy reads the scene the robot sent
    env.close()


def test_robot_description_wire_form():
    r = RobotDescription("delta", {"ee_pos": slice(0, 3), "gripper": slice(3, 4)}, 4, 0.02)
    assert RobotDescription.from_dict(r.to_dict()) == r
    with pytest.raises(ValidationError, match="stop 1 < start 3"):
        RobotDescription.from_dict({**r.to_dict(), "state_layout": {"ee_pos": [3, 1]}})


def test_non_finite_numbers_are_refused(push_context):
    d = json.loads(json.dumps(push_context.to_dict()))
    d["scene"]["objects"][1]["position"][2] = float("nan")
    with pytest.raises(ValidationError, match=re.escape("at scene/objects/1/position/2: not a finite number")):
        EpisodeContext.from_dict(d)


def test_unknown_steering_settings_are_refused_not_ignored(push_policy):
    from policy_steer.errors import ConfigError

    with pytest.raises(ConfigError, match="has no setting 'candidate'"):
        SteeredPolicy.from_method(push_policy, "taco", {"candidate": 16})
    sp = SteeredPolicy.from_method(push_policy, "none", seed=0)
    with pytest.raises(ConfigError, match="has no setting 'particle'"):
        sp.configure(steer={"method": "vls", "particle": 2})


def test_an_option_the_family_lacks_is_unsupported(push_policy):
    sp = SteeredPolicy.from_method(push_policy, "none", seed=0)
    with pytest.raises(SteeringRefused) as e:
        sp.configure(steer={"method": "vls", "vls_form": "velocity"})
    assert e.value.code == STEER_UNSUPPORTED and "flow policies only" in e.value.reason and sp.method == "none"


def test_a_context_update_for_another_task_is_refused_and_the_old_one_stays(push_policy, push_context):
    sp = SteeredPolicy.from_method(push_policy, "vls", {"particles": 2}, seed=0)
    sp.start_episode(push_context)
    with pytest.raises(SteeringRefused) as e:
        sp.update_context(EpisodeContext(task="pick-place", scene=push_context.scene, robot=push_context.robot))
    assert e.value.code == CONTEXT_MISMATCH and sp.context is push_context
    with pytest.raises(SteeringRefused) as e:
        sp.update_context(push_context.with_scene(None))
    assert e.value.code == CONTEXT_REQUIRED and sp.context is push_context
