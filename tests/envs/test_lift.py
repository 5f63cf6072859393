"""The robosuite ``lift`` adapter: gymnasium API, seeding, the scripted expert, the action -> trajectory
map, rollout, the shift variants, cameras and the scene."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from policy_steer.envs.experts.lift import LiftExpert
from policy_steer.envs.robosuite_lift import (
    CUBE_HALF,
    DISTRACTOR_FREE_HALF_ANGLE,
    DISTRACTOR_RING,
    GOAL_JUMP_HEIGHT,
    GOAL_JUMP_STEPS,
    LIFT_HEIGHT,
    OBSTACLE_HALF,
    TRACKING_TOLERANCE,
    LiftEnv,
)
from policy_steer.scene import Scene
from policy_steer.envs.trajectory import ee_trajectory
from policy_steer.envs.variants import MovingGoal, SurfaceShift
from policy_steer.errors import ConfigError


def expert_episode(env: LiftEnv, seed: int, expert: LiftExpert | None = None):
    """(actions [T, 4], states [T + 1, 19], final info) of one seeded expert episode."""
    expert = expert or LiftExpert()
    obs, info = env.reset(seed=seed)
    expert.reset(env, seed)
    actions, states = [], [obs["observation.state"]]
    while True:
        a = expert.act(obs)
        obs, _, terminated, truncated, info = env.step(a)
        actions.append(a)
        states.append(obs["observation.state"])
        if terminated or truncated:
            return np.array(actions), np.array(states), info


def replay(env: LiftEnv, seed: int, actions: np.ndarray) -> dict:
    """Replay ``actions`` from a seeded reset until the episode ends (or the actions do); the last info."""
    env.reset(seed=seed)
    info: dict = {}
    for a in actions:
        _, _, terminated, truncated, info = env.step(a)
        if terminated or truncated:
            break
    return info


def chunk_errors(ee: np.ndarray, actions: np.ndarray, horizon: int = 16) -> np.ndarray:
    """[W] worst distance between ``ee_trajectory`` of each ``horizon``-step window and the executed ee."""
    out = []
    for s in range(len(actions) - horizon + 1):
        pred = ee_trajectory(torch.as_tensor(actions[None, s : s + horizon]), torch.as_tensor(ee[None, s]))[0].numpy()
        out.append(np.linalg.norm(pred - ee[s + 1 : s + horizon + 1], axis=1).max())
    return np.array(out)


# ---------------------------------------------------------------------------------------------- API
@pytest.mark.filterwarnings("ignore:.*(infinity|symmetric and normalized|alternative render modes).*:UserWarning")
def test_gymnasium_env_checker_passes_with_a_camera_and_in_absolute_mode():
    for kwargs in ({"cameras": ("front",), "image_size": (32, 40)}, {"action_mode": "absolute", "render_mode": None}):
        env = LiftEnv(**kwargs)
        check_env(env, skip_render_check=False)
        env.close()


def test_state_layout_names_every_slice_and_matches_the_simulator():
    env = LiftEnv()
    obs, info = env.reset(seed=4)
    lay = env.state_layout
    assert list(lay) == ["ee_pos", "gripper", "joint_pos", "cube_pos", "cube_quat", "target_height"]
    sizes = [s.stop - s.start for s in lay.values()]
    assert sizes == [3, 1, 7, 3, 4, 1] and env.robot_state_dim == 11
    assert [s.start for s in lay.values()] == list(np.cumsum([0] + sizes[:-1]))  # contiguous, in order
    state = obs["observation.state"]
    assert state.dtype == np.float32 and state.shape == (19,)
    np.testing.assert_array_equal(obs["observation.environment_state"], state[11:])
    np.testing.assert_allclose(state[lay["ee_pos"]], env.ee_position(), atol=1e-6)
    np.testing.assert_allclose(state[lay["cube_pos"]], env.cube_position(), atol=1e-6)
    assert state[lay["target_height"]][0] == pytest.approx(env.surface_height + LIFT_HEIGHT, abs=1e-6)
    assert state[lay["gripper"]][0] > 0.95  # a reset settles with the fingers open
    assert info == {"success": False, "is_success": False, "failure": None, "step": 0}
    # closing the gripper shows in the state
    for _ in range(20):
        obs, *_ = env.step(np.array([0.0, 0.0, 0.0, 1.0], dtype=np.float32))
    assert obs["observation.state"][3] < 0.1


def test_bad_options_and_actions_are_refused():
    with pytest.raises(ConfigError, match="moving-goal"):
        LiftEnv(variant="slippery")
    with pytest.raises(ConfigError, match="front"):
        LiftEnv(cameras=("top",))
    with pytest.raises(ConfigError):
        LiftEnv(action_mode="velocity")
    env = LiftEnv()
    with pytest.raises(RuntimeError):
        env.step(np.zeros(4))
    env.reset(seed=0)
    with pytest.raises(ValueError):
        env.step(np.zeros(7))
    with pytest.raises(ValueError):
        env.step(np.array([np.nan, 0, 0, 0]))


def test_same_seed_same_episode_and_other_seeds_differ():
    a, b = LiftEnv(), LiftEnv()
    acts_a, states_a, info_a = expert_episode(a, seed=7)
    acts_b, states_b, info_b = expert_episode(b, seed=7)
    np.testing.assert_array_equal(acts_a, acts_b)
    np.testing.assert_array_equal(states_a, states_b)
    assert info_a == info_b
    other, _ = a.reset(seed=8)
    assert np.linalg.norm(other["observation.state"][11:13] - states_a[0, 11:13]) > 1e-3  # the cube moved
    again, _ = a.reset(seed=7)
    np.testing.assert_array_equal(again["observation.state"], states_a[0])


# ------------------------------------------------------------------------------------------- expert
def test_expert_lifts_the_cube_in_most_short_runs():
    env = LiftEnv()
    results = [expert_episode(env, seed)[2] for seed in range(5)]
    assert sum(r["success"] for r in results) >= 4
    assert all(r["failure"] is None for r in results)


@pytest.mark.slow
def test_expert_success_is_at_least_95_percent_over_50_episodes():
    env = LiftEnv()
    wins = sum(expert_episode(env, seed)[2]["success"] for seed in range(50))
    assert wins >= 48


def test_expert_works_in_absolute_mode():
    _, states, info = expert_episode(LiftEnv(action_mode="absolute"), seed=2)
    assert info["success"]
    assert states[-1, 13] > states[0, 18]  # the cube's centre above the target height


# ------------------------------------------------------------------------------ action -> trajectory
def test_chunks_map_to_the_executed_end_effector_trajectory():
    env = LiftEnv()
    # the demonstrations' motions: within 5 mm over every 16-step window
    actions, states, info = expert_episode(env, seed=1)
    assert info["success"]
    assert chunk_errors(states[:, :3].astype(np.float64), actions.astype(np.float64)).max() < 0.005
    # arbitrary, jerky actions at up to max_step per step: within TRACKING_TOLERANCE
    rng = np.random.default_rng(0)
    env.reset(seed=2)
    home = env.ee_position() + np.array([0.05, 0.0, -0.06])
    v, ee, acts = np.zeros(3), [env.ee_position()], []
    for _ in range(100):
        v = np.clip(0.8 * v + rng.normal(0, 0.004, 3) + 0.05 * (home - env.ee_position()), -env.max_step, env.max_step)
        acts.append(np.array([*v, -1.0]))
        env.step(acts[-1])
        ee.append(env.ee_position())
    err = chunk_errors(np.array(ee), np.array(acts))
    assert np.abs(np.array(acts)[:, :3]).max() > 0.9 * env.max_step  # the test did drive at full speed
    assert err.max() < TRACKING_TOLERANCE and err.mean() < 0.01


def test_absolute_targets_are_reached():
    env = LiftEnv(action_mode="absolute")
    env.reset(seed=3)
    target = env.ee_position() + np.array([0.06, -0.05, -0.08])
    for _ in range(20):
        env.step(np.array([*target, -1.0], dtype=np.float32))
    assert np.linalg.norm(env.ee_position() - target) < 0.003


# ----------------------------------------------------------------------------------------- rollout
def test_rollout_predicts_the_states_and_leaves_the_env_unchanged():
    env, twin = LiftEnv(), LiftEnv()
    warmup = [np.array([0.008, 0.002, -0.006, -1.0])] * 10
    for e in (env, twin):
        e.reset(seed=3)
        for a in warmup:
            e.step(a)
    k = np.arange(14)[:, None]
    actions = np.concatenate([0.01 * np.sin(0.3 * k + np.array([0.0, 1.0, 2.0])), np.where(k < 7, -1.0, 1.0)], axis=1)
    before = env.observe()["observation.state"]
    predicted = env.rollout(actions)
    assert predicted.shape == (14, 19) and predicted.dtype == np.float32
    np.testing.assert_array_equal(env.observe()["observation.state"], before)  # unchanged
    stepped = np.array([env.step(a)[0]["observation.state"] for a in actions])
    untouched = np.array([twin.step(a)[0]["observation.state"] for a in actions])
    np.testing.assert_array_equal(stepped, predicted)  # the prediction is the real future
    np.testing.assert_array_equal(stepped, untouched)  # and the rollout left no trace
    assert np.linalg.norm(predicted[-1, :3] - before[:3]) > 0.01  # the rollout did move the arm
    assert predicted[-1, 3] < predicted[6, 3]  # and closed the gripper


# ---------------------------------------------------------------------------------------- variants
def test_shifted_surface_moves_the_table_and_the_cube_with_it():
    nominal, shifted = LiftEnv(), LiftEnv(variant="shifted-surface")
    for seed in range(3):
        n_obs, _ = nominal.reset(seed=seed)
        s_obs, _ = shifted.reset(seed=seed)
        off = shifted.layout.table_offset
        s = SurfaceShift()
        assert s.dx_min <= abs(off[0]) <= s.dx_max
        assert s.dy_min <= abs(off[1]) <= s.dy_max
        assert s.dz_min <= abs(off[2]) <= s.dz_max
        m, d = shifted.model, shifted.data
        g = m.geom("table_collision").id
        top = d.geom_xpos[g][2] + m.geom_size[g][2]
        assert top == pytest.approx(shifted.surface_height, abs=1e-9) and top == pytest.approx(0.8 + off[2], abs=1e-9)
        np.testing.assert_allclose(d.geom_xpos[g][:2], off[:2], atol=1e-9)
        assert shifted.scene().surface_height == pytest.approx(top)
        # same robot start; the cube sits at the same place on the moved table, and stays there
        np.testing.assert_array_equal(s_obs["observation.state"][:11], n_obs["observation.state"][:11])
        np.testing.assert_allclose(s_obs["observation.state"][11:14] - off, n_obs["observation.state"][11:14], atol=1e-6)
        for _ in range(5):
            s_obs, *_ = shifted.step(np.array([0.0, 0.0, 0.0, -1.0]))
        assert s_obs["observation.state"][13] - top == pytest.approx(CUBE_HALF, abs=0.002)
        assert s_obs["observation.state"][18] == pytest.approx(top + LIFT_HEIGHT)
    assert expert_episode(shifted, seed=5)[2]["success"]


def test_obstacle_blocks_the_demonstrated_approach_but_not_one_from_above():
    nominal, blocked = LiftEnv(), LiftEnv(variant="obstacle")
    for seed in (0, 1):
        actions, _, info = expert_episode(nominal, seed)
        assert info["success"]
        replayed = replay(blocked, seed, actions)
        assert replayed["failure"] == "collision:obstacle" and not replayed["success"]
        obst = blocked.scene().object("obstacle")
        cube = blocked.scene().object("cube")
        assert obst.kind == "obstacle" and obst.half_size == list(OBSTACLE_HALF)
        assert obst.position[0] < cube.position[0] - 0.06  # between the robot and the cube
        assert obst.position[2] - obst.half_size[2] == pytest.approx(blocked.surface_height, abs=1e-6)  # on the table
    _, _, info = expert_episode(blocked, seed=0, expert=LiftExpert(route="over"))
    assert info["success"] and info["failure"] is None
    assert "obstacle" not in [o.name for o in nominal.scene().objects]


def test_clutter_puts_distractors_near_the_cube_and_knocking_one_fails():
    env = LiftEnv(variant="clutter")
    env.reset(seed=6)
    scene = env.scene()
    cube = np.array(scene.object("cube").position)
    distractors = [o for o in scene.objects if o.kind == "distractor"]
    assert len(distractors) == 3
    for o in distractors:
        rel = np.array(o.position[:2]) - cube[:2]
        assert DISTRACTOR_RING[0] - 1e-6 <= np.linalg.norm(rel) <= DISTRACTOR_RING[1] + 1e-6
        assert abs(np.arctan2(rel[1], -rel[0])) >= DISTRACTOR_FREE_HALF_ANGLE - 1e-6  # not on the robot side
        assert o.position[2] - o.half_size[2] == pytest.approx(env.surface_height, abs=0.002)  # standing on the table
    assert expert_episode(env, seed=6)[2]["success"]  # the demonstrations fit between them
    # a distractor moved by more than 1 cm ends the episode
    env.reset(seed=6)
    jnt = env._rs.distractors[0].joints[0]
    qpos = env._rs.sim.data.get_joint_qpos(jnt).copy()
    qpos[0] += 0.02
    env._rs.sim.data.set_joint_qpos(jnt, qpos)
    _, _, terminated, _, info = env.step(np.array([0.0, 0.0, 0.0, -1.0]))
    assert terminated and info["failure"] == "collision:distractor"
    # so does pressing the closed fingers onto one (open, they would straddle it)
    env.reset(seed=6)
    target = np.array(distractors[0].position) + [0.0, 0.0, distractors[0].half_size[2]]
    for _ in range(80):
        delta = np.clip(target - env.ee_position(), -env.max_step, env.max_step)
        _, _, terminated, _, info = env.step(np.array([*delta, 1.0]))
        if terminated:
            break
    assert info["failure"] == "collision:distractor"


def test_moving_goal_raises_the_target_once_at_the_seeded_step():
    nominal, moving = LiftEnv(), LiftEnv(variant="moving-goal")
    seed = 4
    obs, info = moving.reset(seed=seed)
    assert info["goal_jump_step"] is None
    jump = moving.layout.goal_jump_step
    assert GOAL_JUMP_STEPS[0] <= jump <= GOAL_JUMP_STEPS[1]
    old = float(obs["observation.state"][18])
    assert old == pytest.approx(moving.surface_height + LIFT_HEIGHT)
    expert = LiftExpert()
    expert.reset(moving, seed)
    heights, jumps = [old], []
    while True:
        obs, _, terminated, truncated, info = moving.step(expert.act(obs))
        heights.append(float(obs["observation.state"][18]))
        jumps.append(info["goal_jump_step"])
        if terminated or truncated:
            break
    heights = np.array(heights)
    assert np.all(heights[:jump] == old) and np.all(heights[jump:] == heights[jump])
    new = heights[jump] - moving.surface_height
    assert GOAL_JUMP_HEIGHT[0] <= new <= GOAL_JUMP_HEIGHT[1] and heights[jump] - old >= MovingGoal().jump_min
    assert jumps[: jump - 1] == [None] * (jump - 1) and set(jumps[jump - 1 :]) == {jump}
    assert moving.scene().keypoints["lift_target"][2] == pytest.approx(heights[jump])
    assert moving.model.body_pos[moving._rs.marker_body_id][2] == pytest.approx(heights[jump])  # the plate moved
    assert info["success"] and obs["observation.state"][13] > heights[-1]  # the expert followed the new target
    # what lifts the cube in nominal does not reach the new target
    actions, _, n_info = expert_episode(nominal, seed)
    assert n_info["success"] and not replay(moving, seed, actions)["success"]


# ----------------------------------------------------------------------------------- images, scene
def test_cameras_render_the_scene():
    env = LiftEnv(cameras=("front", "wrist"), image_size=(32, 40), render_size=(60, 80))
    obs, _ = env.reset(seed=0)
    front, wrist = obs["observation.images.front"], obs["observation.images.wrist"]
    for img in (front, wrist):
        assert img.shape == (32, 40, 3) and img.dtype == np.uint8 and img.std() > 5
    assert np.abs(front.astype(int) - wrist.astype(int)).mean() > 10
    view = env.render()
    assert view.shape == (60, 80, 3)
    assert env.render_camera("wrist", (60, 80)).shape == (60, 80, 3)
    with pytest.raises(ConfigError):
        env.render_camera("top")
    # the red cube is in the middle of the front view
    red = (view[..., 0].astype(int) - view[..., 1]) > 80
    rows, cols = np.nonzero(red)
    assert red.sum() >= 6 and 20 < cols.mean() < 60 and 15 < rows.mean() < 45
    env.close()
    assert LiftEnv(render_mode=None).render() is None


def test_scene_describes_the_simulator_and_round_trips():
    env = LiftEnv(variant="obstacle")
    obs, _ = env.reset(seed=2)
    scene = env.scene()
    back = Scene.from_dict(json.loads(scene.to_json()))
    assert back == scene
    assert {o.kind for o in scene.objects} == {"table", "manipuland", "goal", "obstacle"}
    np.testing.assert_allclose(scene.object("cube").position, obs["observation.state"][11:14], atol=1e-6)
    np.testing.assert_allclose(scene.keypoints["ee"], obs["observation.state"][:3], atol=1e-6)
    assert scene.keypoints["lift_target"][2] == pytest.approx(float(obs["observation.state"][18]))
    assert scene.surface_height == pytest.approx(0.8)
    table = scene.object("table")
    assert table.position[2] + table.half_size[2] == pytest.approx(scene.surface_height)
    low, high = np.array(scene.workspace_low), np.array(scene.workspace_high)
    assert np.all(low < obs["observation.state"][:3]) and np.all(obs["observation.state"][:3] < high)
    assert scene.gripper_opening > 0.95 and scene.instruction == env.instruction
