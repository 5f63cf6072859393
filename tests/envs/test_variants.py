"""Each shift variant really changes the problem, in the documented way."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

from policy_steer.envs import make
from policy_steer.envs.variants import Clutter, SurfaceShift
from policy_steer.envs.world import TABLE_CENTER

from .conftest import PLAIN_TASKS, expert_episode, replay

SEEDS = (0, 1, 2, 3)


@pytest.mark.parametrize("task", PLAIN_TASKS)
def test_same_seed_same_base_layout_in_every_variant(task, nominal_envs):
    nominal = nominal_envs[task]
    obs_n, _ = nominal.reset(seed=7)
    for variant in ("obstacle", "clutter", "moving-goal"):
        obs, _ = make(task, variant).reset(seed=7)
        assert np.array_equal(obs["observation.state"], obs_n["observation.state"]), variant


@pytest.mark.parametrize("task", PLAIN_TASKS)
def test_nominal_demonstration_collides_with_the_obstacle(task, nominal_envs):
    env = make(task, "obstacle")
    for seed in SEEDS:
        actions, _, _, info = expert_episode(nominal_envs[task], seed)
        assert info["success"]
        steps, info = replay(env, seed, actions)
        assert info["failure"] == "collision:obstacle" and not info["success"], (seed, info)
        assert steps < len(actions)  # it ended early, at the contact
    scene = env.unwrapped.scene()
    assert scene.object("obstacle").kind == "obstacle"


def test_push_obstacle_blocks_the_seeds_side_and_leaves_the_other_free():
    env = make("push", "obstacle")
    for seed in SEEDS:
        env.reset(seed=seed)
        u = env.unwrapped
        block = u.body_pose(u.data, "block")[:2]
        target = u.goal_position()[:2]
        pillar = np.array(u.scene().object("obstacle").position[:2])
        d = (target - block) / np.linalg.norm(target - block)
        normal = np.array([-d[1], d[0]])
        normal = normal if normal[1] >= 0 else -normal
        assert np.sign((pillar - block) @ normal) == u.layout.mode
        # The expert, which takes the free side in this variant, succeeds.
        _, _, _, info = expert_episode(env, seed)
        assert info["success"], seed


@pytest.mark.parametrize("task", PLAIN_TASKS)
def test_shifted_surface_moves_the_table_by_the_stated_amount(task, nominal_envs):
    env = make(task, "shifted-surface")
    for seed in SEEDS:
        obs, _ = env.reset(seed=seed)
        u = env.unwrapped
        off = u.layout.table_offset
        s = SurfaceShift()
        assert s.dx_min <= abs(off[0]) <= s.dx_max
        assert s.dy_min <= abs(off[1]) <= s.dy_max
        assert s.dz_min <= abs(off[2]) <= s.dz_max
        scene = u.scene()
        table = scene.object("table")
        assert scene.surface_height == pytest.approx(off[2])
        assert table.position[:2] == pytest.approx([TABLE_CENTER[0] + off[0], TABLE_CENTER[1] + off[1]])
        assert table.position[2] + table.half_size[2] == pytest.approx(off[2])  # its top is the surface
        # The collision surface really is there: nothing rests below it, the goal/target moved with it.
        top = u.model.geom("table_top")
        assert u.data.geom_xpos[top.id][2] == pytest.approx(off[2])
        nominal_obs, _ = nominal_envs[task].reset(seed=seed)
        goal = u.state_layout.get("goal", u.state_layout.get("target"))
        np.testing.assert_allclose(obs["observation.state"][goal], nominal_obs["observation.state"][goal] + off, atol=1e-6)
        if task != "reach":
            manip = u.state_layout["block_pos" if task == "push" else "cube_pos"]
            z = obs["observation.state"][manip][2]
            assert z - off[2] == pytest.approx(nominal_obs["observation.state"][manip][2], abs=1e-3)


@pytest.mark.parametrize("task", PLAIN_TASKS)
def test_nominal_demonstration_fails_on_the_shifted_surface(task, nominal_envs):
    env = make(task, "shifted-surface")
    for seed in SEEDS:
        actions, _, _, info = expert_episode(nominal_envs[task], seed)
        _, info = replay(env, seed, actions)
        assert not info["success"], seed


@pytest.mark.parametrize("task", PLAIN_TASKS)
def test_clutter_distractors_stand_near_the_goal(task):
    env = make(task, "clutter")
    for seed in SEEDS:
        env.reset(seed=seed)
        u = env.unwrapped
        scene = u.scene()
        goal = np.array(scene.keypoints["goal" if task == "reach" else "target"])
        ds = [o for o in scene.objects if o.kind == "distractor"]
        assert len(ds) == Clutter().count
        for o in ds:
            r = np.linalg.norm(np.array(o.position[:2]) - goal[:2])
            assert Clutter().ring_min - 1e-6 <= r <= Clutter().ring_max + 1e-6
            assert o.position[2] - o.half_size[2] == pytest.approx(scene.surface_height, abs=2e-3)  # standing
        # Standing still for a while does not count as knocking them over.
        for _ in range(3):
            _, _, terminated, _, info = env.step(np.zeros(u.action_dim, dtype=np.float32))
        assert not terminated and info["failure"] is None


def test_touching_or_displacing_a_distractor_fails():
    env = make("reach", "clutter", action_mode="absolute")
    env.reset(seed=0)
    u = env.unwrapped
    d0 = np.array(u.scene().object("distractor_0").position)
    info = {}
    for _ in range(40):  # drive the tip straight at distractor 0, mid-height
        _, _, terminated, _, info = env.step(np.array([*d0[:2], u.surface_height + 0.03], dtype=np.float32))
        if terminated:
            break
    assert info["failure"] == "collision:distractor"

    env.reset(seed=0)
    qadr = u.model.jnt_qposadr[u.model.joint("distractor_1").id]
    u.data.qpos[qadr] += 0.02  # something shoved it 2 cm
    mujoco.mj_forward(u.model, u.data)
    _, _, terminated, _, info = env.step(np.zeros(3, dtype=np.float32))
    assert terminated and info["failure"] == "collision:distractor"


@pytest.mark.parametrize("task", PLAIN_TASKS)
def test_moving_goal_jumps_once_and_the_state_shows_it(task):
    env = make(task, "moving-goal")
    u = env.unwrapped
    obs, info = env.reset(seed=3)
    sl = u.state_layout.get("goal", u.state_layout.get("target"))
    jump = u.layout.goal_jump_step
    lo, hi = u.variant_params.step_min, u.variant_params.step_max
    assert lo <= jump <= hi and info["goal_jump_step"] is None
    goals = [obs["observation.state"][sl].copy()]
    for k in range(1, hi + 3):
        obs, _, terminated, _, info = env.step(np.zeros(u.action_dim, dtype=np.float32))
        goals.append(obs["observation.state"][sl].copy())
        assert info["goal_jump_step"] == (jump if k >= jump else None)
    goals = np.array(goals)
    changes = np.flatnonzero(np.linalg.norm(np.diff(goals, axis=0), axis=1) > 1e-9) + 1
    assert list(changes) == [jump]
    assert np.linalg.norm(goals[jump] - goals[0]) >= u.variant_params.jump_min
    assert u.scene().keypoints["goal" if task == "reach" else "target"] == pytest.approx(goals[-1], abs=1e-6)


@pytest.mark.parametrize("task", PLAIN_TASKS)
def test_moving_goal_fools_the_open_loop_demonstration_but_not_the_closed_loop_expert(task, nominal_envs):
    env = make(task, "moving-goal")
    actions, _, _, _ = expert_episode(nominal_envs[task], 3)
    _, info = replay(env, 3, actions)
    assert not info["success"]
    _, _, _, info = expert_episode(env, 3)
    assert info["success"] and info["goal_jump_step"] is not None


@pytest.mark.parametrize("variant", ("obstacle", "shifted-surface", "clutter", "moving-goal"))
@pytest.mark.parametrize("task", PLAIN_TASKS)
def test_every_variant_stays_solvable(task, variant):
    """The expert, which may use privileged knowledge of the shift (where the obstacle or the
    distractors are, where the table is), solves the shifted problem: what steering is meant to reach."""
    env = make(task, variant)
    wins = sum(bool(expert_episode(env, seed)[3]["success"]) for seed in range(10))
    assert wins >= 8, wins
