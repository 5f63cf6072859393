"""The robosuite ``stack`` task (issue 20) and the Panda code it shares with ``lift``.

- the scripted expert stacks on short seeded runs; each variant really changes the problem (the
  demonstrated carry hits the wall, the table and both cubes move, distractors stand round cube B and
  knocking one fails, cube B jumps and the nominal actions then miss it);
- the model rollout predicts the real future and leaves the simulator bit-identical;
- the lift expert's episodes are, hash for hash, those recorded before lift moved onto the shared module
  (tests/fixtures/lift_expert_records.json, made from the working tree before the extraction);
- gymnasium registration, the scene the offline VLS rules read, typed variant parameters;
- the shipped policy (checkpoints/stack-diffusion) loads and its chunk is lerobot's own with the same noise.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from policy_steer.envs import TASKS, make
from policy_steer.envs.experts.lift import LiftExpert
from policy_steer.envs.experts.stack import StackExpert
from policy_steer.envs.robosuite_stack import CARRY_HEIGHT, CUBE_A_HALF, CUBE_B_HALF, SEPARATION, StackEnv, StackWall
from policy_steer.envs.variants import Clutter, MovingGoal, SurfaceShift
from policy_steer.errors import ConfigError
from policy_steer.scene import Scene

ROOT = Path(__file__).resolve().parents[2]
LIFT_FIXTURE = ROOT / "tests" / "fixtures" / "lift_expert_records.json"
CHECKPOINT = ROOT / "checkpoints" / "stack-diffusion"


def expert_episode(env: StackEnv, seed: int, expert: StackExpert | None = None):
    """(actions [T, 4], states [T + 1, 25], final info) of one seeded expert episode."""
    expert = expert or StackExpert()
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
    return np.array(actions), np.array(states), info


def replay(env: StackEnv, seed: int, actions: np.ndarray) -> dict:
    env.reset(seed=seed)
    info: dict = {}
    for a in actions:
        _, _, terminated, truncated, info = env.step(a)
        if terminated or truncated:
            break
    return info


@pytest.fixture(scope="module")
def nominal():
    env = StackEnv()
    yield env
    env.close()


# -------------------------------------------------------------------------------------- api, expert
def test_state_layout_and_observation(nominal):
    obs, info = nominal.reset(seed=4)
    lay = nominal.state_layout
    assert list(lay) == ["ee_pos", "gripper", "joint_pos", "cube_a_pos", "cube_a_quat", "cube_b_pos", "cube_b_quat"]
    state = obs["observation.state"]
    assert state.dtype == np.float32 and state.shape == (25,) and nominal.robot_state_dim == 11
    np.testing.assert_array_equal(obs["observation.environment_state"], state[11:])
    a, b = nominal.cube_positions()
    np.testing.assert_allclose(state[lay["cube_a_pos"]], a, atol=1e-6)
    np.testing.assert_allclose(state[lay["cube_b_pos"]], b, atol=1e-6)
    assert a[2] == pytest.approx(0.8 + CUBE_A_HALF, abs=2e-3) and b[2] == pytest.approx(0.8 + CUBE_B_HALF, abs=2e-3)
    assert SEPARATION[0] - 1e-6 <= np.linalg.norm(a[:2] - b[:2]) <= SEPARATION[1] + 1e-6
    assert state[3] > 0.95  # settled with the fingers open
    assert info == {"success": False, "is_success": False, "failure": None, "step": 0}
    with pytest.raises(ValueError):
        nominal.step(np.zeros(3))


def test_expert_stacks_on_short_seeded_runs(nominal):
    for seed in (0, 1, 2):
        actions, states, info = expert_episode(nominal, seed)
        assert info["success"] and info["failure"] is None, (seed, info)
        a, b = states[-1, 11:14], states[-1, 18:21]
        assert a[2] - b[2] == pytest.approx(CUBE_A_HALF + CUBE_B_HALF, abs=0.005)  # A sits on B
        assert np.linalg.norm(a[:2] - b[:2]) < CUBE_B_HALF
        assert states[-1, 3] > 0.5  # let go of it
        assert len(actions) < 150
    # the same seed, the same episode
    again = expert_episode(nominal, 0)
    np.testing.assert_array_equal(again[1], expert_episode(nominal, 0)[1])


def test_holding_the_cube_on_top_is_not_success(nominal):
    nominal.reset(seed=3)
    expert = StackExpert()
    expert.reset(nominal, 3)
    obs = nominal.observe()
    while expert.phase != "release":
        obs, _, terminated, _, info = nominal.step(expert.act(obs))
        assert not terminated
    for _ in range(2):  # set it down on cube B without opening the fingers
        _, _, terminated, _, info = nominal.step(np.array([0.0, 0.0, -0.002, 1.0]))
        assert not terminated and not info["success"]
    assert nominal.stacked() and not nominal.success()  # on top, but still in the fingers
    for _ in range(10):  # let go: now it is stacked
        _, _, terminated, _, info = nominal.step(np.array([0.0, 0.0, 0.0, -1.0]))
        if terminated:
            break
    assert info["success"]


@pytest.mark.slow
def test_expert_success_is_at_least_95_percent_over_100_seeds(nominal):
    wins = sum(expert_episode(nominal, seed)[2]["success"] for seed in range(100))
    assert wins >= 95


# ---------------------------------------------------------------------------------------- variants
def test_obstacle_wall_stands_between_the_cubes_and_stops_the_demonstrated_carry(nominal):
    walled = StackEnv(variant="obstacle")
    actions, _, info = expert_episode(nominal, seed=0)
    assert info["success"]
    assert replay(walled, 0, actions)["failure"] == "collision:obstacle"
    walled.reset(seed=0)
    scene = walled.scene()
    wall, a, b = scene.object("obstacle"), np.array(scene.object("cube_a").position), np.array(scene.object("cube_b").position)
    p = StackWall()
    assert wall.kind == "obstacle" and wall.half_size == pytest.approx([p.thickness / 2, p.width / 2, p.height / 2])
    t = np.dot(np.array(wall.position[:2]) - a[:2], b[:2] - a[:2]) / np.dot(b[:2] - a[:2], b[:2] - a[:2])
    assert p.at_min - 1e-6 <= t <= p.at_max + 1e-6  # on the A -> B line, between them
    assert wall.position[2] + wall.half_size[2] - scene.surface_height == pytest.approx(p.height)
    assert p.height > CARRY_HEIGHT  # taller than the demonstrations carry
    _, _, over = expert_episode(walled, 0, StackExpert(route="over"))
    assert over["success"]
    # a lower wall (a parameter) is built lower in the simulator
    low = StackEnv(variant="obstacle", variant_params={"obstacle.height": 0.05})
    low.reset(seed=0)
    g = low.model.geom(low.model.body_geomadr[low._rs.wall_body_id])
    assert low.model.geom_size[g.id][2] == pytest.approx(0.025)
    for e in (walled, low):
        e.close()


def test_shifted_surface_moves_the_table_and_both_cubes(nominal):
    shifted = StackEnv(variant="shifted-surface")
    for seed in (0, 1):
        n_obs, _ = nominal.reset(seed=seed)
        s_obs, _ = shifted.reset(seed=seed)
        off = shifted.layout.table_offset
        s = SurfaceShift()
        assert s.dx_min <= abs(off[0]) <= s.dx_max and s.dz_min <= abs(off[2]) <= s.dz_max
        np.testing.assert_array_equal(s_obs["observation.state"][:11], n_obs["observation.state"][:11])  # same robot
        for sl in ("cube_a_pos", "cube_b_pos"):
            lay = shifted.state_layout[sl]
            np.testing.assert_allclose(s_obs["observation.state"][lay] - off, n_obs["observation.state"][lay], atol=2e-3)
        assert shifted.scene().surface_height == pytest.approx(0.8 + off[2])
    shifted.close()


def test_clutter_stands_round_cube_b_and_knocking_one_fails():
    env = StackEnv(variant="clutter")
    env.reset(seed=6)
    scene = env.scene()
    a, b = np.array(scene.object("cube_a").position), np.array(scene.object("cube_b").position)
    distractors = [o for o in scene.objects if o.kind == "distractor"]
    c = Clutter()
    assert len(distractors) == c.count
    for o in distractors:
        rel = np.array(o.position[:2]) - b[:2]
        assert c.ring_min - 1e-6 <= np.linalg.norm(rel) <= c.ring_max + 1e-6
        towards_a = (a[:2] - b[:2]) / np.linalg.norm(a[:2] - b[:2])
        assert np.dot(rel, towards_a) / np.linalg.norm(rel) < np.cos(np.pi / 3) + 1e-6  # not on A's side
    jnt = env._rs.distractors[0].joints[0]
    qpos = env._rs.sim.data.get_joint_qpos(jnt).copy()
    qpos[0] += 0.02
    env._rs.sim.data.set_joint_qpos(jnt, qpos)
    _, _, terminated, _, info = env.step(np.array([0.0, 0.0, 0.0, -1.0]))
    assert terminated and info["failure"] == "collision:distractor"
    five = StackEnv(variant="clutter", variant_params={"clutter.count": 5})
    five.reset(seed=6)
    assert sum(o.kind == "distractor" for o in five.scene().objects) == 5
    for e in (env, five):
        e.close()


def test_moving_goal_moves_cube_b_once_and_the_nominal_actions_miss_it(nominal):
    moving = StackEnv(variant="moving-goal")
    seed = 4
    actions, _, info = expert_episode(nominal, seed)
    assert info["success"]
    assert not replay(moving, seed, actions)["success"]
    obs, info = moving.reset(seed=seed)
    assert info["goal_jump_step"] is None
    jump = moving.layout.goal_jump_step
    g = MovingGoal(step_min=20, step_max=45)
    assert g.step_min <= jump <= g.step_max
    b0 = obs["observation.state"][18:21].copy()
    _, states, info = expert_episode(moving, seed)
    assert info["success"] and info["goal_jump_step"] == jump  # the expert followed cube B
    bs = states[:, 18:21]
    assert np.abs(bs[:jump] - b0).max() < 1e-3 and np.linalg.norm(bs[jump, :2] - b0[:2]) >= g.jump_min
    moving.close()


def test_bad_variant_parameters_are_refused():
    with pytest.raises(ConfigError, match="obstacle.height = 0.5 is outside"):
        StackEnv(variant="obstacle", variant_params={"obstacle.height": 0.5})
    with pytest.raises(ConfigError, match="belongs to variant 'clutter'"):
        StackEnv(variant="obstacle", variant_params={"clutter.count": 2})
    with pytest.raises(ConfigError, match="unknown variant"):
        StackEnv(variant="windy")


# ----------------------------------------------------------------------------------------- rollout
def test_rollout_predicts_the_states_and_leaves_the_env_unchanged():
    env, twin = StackEnv(), StackEnv()
    warmup = [np.array([0.008, 0.002, -0.006, -1.0])] * 10
    for e in (env, twin):
        e.reset(seed=3)
        for a in warmup:
            e.step(a)
    k = np.arange(14)[:, None]
    actions = np.concatenate([0.01 * np.sin(0.3 * k + np.array([0.0, 1.0, 2.0])), np.where(k < 7, -1.0, 1.0)], axis=1)
    before = env.observe()["observation.state"]
    predicted = env.rollout(actions)
    assert predicted.shape == (14, 25) and predicted.dtype == np.float32
    np.testing.assert_array_equal(env.observe()["observation.state"], before)
    stepped = np.array([env.step(a)[0]["observation.state"] for a in actions])
    untouched = np.array([twin.step(a)[0]["observation.state"] for a in actions])
    np.testing.assert_array_equal(stepped, predicted)
    np.testing.assert_array_equal(stepped, untouched)
    assert np.linalg.norm(predicted[-1, :3] - before[:3]) > 0.01 and predicted[-1, 3] < predicted[6, 3]
    for e in (env, twin):
        e.close()


# ----------------------------------------------------------------------- lift on the shared module
def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def lift_records(variants=("nominal", "obstacle", "shifted-surface", "clutter", "moving-goal"), seeds=(0, 1)) -> list[dict]:
    """Lift expert episodes' hashes (actions, states) per variant and seed, then an absolute-mode episode's
    states and a rollout's prediction: what tests/fixtures/lift_expert_records.json holds."""
    out = []
    for variant in variants:
        env = make("lift", variant)
        for seed in seeds:
            obs, info = env.reset(seed=seed)
            ex = LiftExpert(route="over" if variant == "obstacle" else "low")
            ex.reset(env, seed)
            acts, states = [], [obs["observation.state"]]
            while True:
                a = ex.act(obs)
                acts.append(a)
                obs, _, term, trunc, info = env.step(a)
                states.append(obs["observation.state"])
                if term or trunc:
                    break
            out.append({"variant": variant, "seed": seed, "success": bool(info["success"]), "steps": info["step"],
                        "actions_sha256": _sha(np.array(acts, np.float32)), "states_sha256": _sha(np.array(states, np.float32))})
        env.close()
    env = make("lift", action_mode="absolute")
    obs, _ = env.reset(seed=2)
    ex = LiftExpert()
    ex.reset(env, 2)
    states = []
    for _ in range(30):
        obs, *_ = env.step(ex.act(obs))
        states.append(obs["observation.state"])
    k = np.arange(14)[:, None]
    acts = np.concatenate([env.ee_position() + 0.01 * np.cumsum(np.sin(0.3 * k + np.array([0.0, 1.0, 2.0])), axis=0),
                           np.where(k < 7, -1.0, 1.0)], axis=1)
    out.append({"variant": "nominal", "seed": 2, "absolute_states_sha256": _sha(np.array(states, np.float32)),
                "rollout_sha256": _sha(env.rollout(acts))})
    env.close()
    return out


def test_lift_replays_bit_identically_on_the_shared_module():
    ref = json.loads(LIFT_FIXTURE.read_text())["episodes"]
    got = lift_records(variants=("nominal", "obstacle", "clutter"), seeds=(0,))
    want = [r for r in ref if r.get("seed") == 0 and r["variant"] in ("nominal", "obstacle", "clutter")] + [ref[-1]]
    assert got == want


@pytest.mark.slow
def test_lift_replays_every_recorded_episode_bit_identically():
    assert lift_records() == json.loads(LIFT_FIXTURE.read_text())["episodes"]


# ------------------------------------------------------------------------------ registration, scene
def test_gymnasium_registration_builds_the_same_env():
    assert TASKS["stack"] == "PolicySteer/Stack-v0" and "PolicySteer/Stack-v0" in gym.registry
    env = gym.make("PolicySteer/Stack-v0", variant="clutter", disable_env_checker=True)
    ours = make("stack", "clutter")
    assert (env.unwrapped.task, env.unwrapped.variant, env.unwrapped.action_dim) == ("stack", "clutter", 4)
    o1, _ = env.reset(seed=5)
    o2, _ = ours.reset(seed=5)
    np.testing.assert_array_equal(o1["observation.state"], o2["observation.state"])
    env.close()
    ours.close()


def test_scene_round_trips_and_the_offline_rules_stack_onto_cube_b():
    from policy_steer.vlm_rewards.synthesis.offline import OfflineSynthesizer

    env = StackEnv(variant="obstacle", cameras=("front",), image_size=(32, 40))
    obs, _ = env.reset(seed=2)
    scene = env.scene()
    assert Scene.from_dict(json.loads(scene.to_json())) == scene
    assert {o.kind for o in scene.objects} == {"table", "manipuland", "target", "obstacle"}
    np.testing.assert_allclose(scene.object("cube_a").position, obs["observation.state"][11:14], atol=1e-6)
    assert scene.keypoints["stack_point"][2] == pytest.approx(scene.object("cube_b").position[2] + CUBE_B_HALF + CUBE_A_HALF)
    img = obs["observation.images.front"]
    assert img.shape == (32, 40, 3) and img.std() > 5
    program = OfflineSynthesizer().synthesize(scene)
    stages = [s.name for s in program.stages]
    assert stages == ["pre-grasp", "grasp", "carry", "place"]
    text = program.to_json()
    assert '"cube_a"' in text and '"cube_b"' in text and '"obstacle"' in text
    env.close()


# ------------------------------------------------------------------------------------------ policy
@pytest.fixture(scope="module")
def policy():
    from policy_steer.policies import load_policy

    return load_policy(str(CHECKPOINT))


def test_shipped_stack_policy_describes_itself(policy):
    meta = json.loads((CHECKPOINT / "policy_steer.json").read_text())
    assert meta["task"] == "stack" and meta["control_hz"] == 20.0 and meta["action_mode"] == "delta"
    assert meta["trained_with"] == "lerobot.scripts.lerobot_train.train"
    assert policy.spec.action_dim == 4 and policy.spec.observation["observation.state"].shape == (25,)
    assert sum(f.stat().st_size for f in CHECKPOINT.rglob("*") if f.is_file()) < 5 * 2**20
    assert (CHECKPOINT / "verifier" / "verifier.json").is_file()  # TACO's pseudo-count verifier, fitted


def test_stack_chunk_equals_lerobots_own_with_the_same_noise(policy, nominal):
    from policy_steer.sampler import Sampler

    obs, _ = nominal.reset(seed=7)
    obs = {**obs, "task": nominal.instruction, "step": 0}
    noise = torch.randn(1, policy.model_horizon, 4, generator=torch.Generator().manual_seed(3))
    lerobot = policy.policy

    def batch() -> dict:
        return policy.preprocessor({k: torch.from_numpy(obs[k]) for k in ("observation.state", "observation.environment_state")}
                                   | {"task": obs["task"]})

    lerobot.reset()
    b = batch()
    n = policy.config.n_obs_steps
    stacked = {k: torch.stack([b[k]] * n, dim=1) for k in ("observation.state", "observation.environment_state")}
    with torch.no_grad():
        ref = policy.postprocessor(lerobot.predict_action_chunk(stacked, noise=noise.clone()))[0]
    policy.reset()
    res = Sampler(policy).sample(policy.prepare(obs), noise.clone())
    ours = policy.unnormalize_actions(res.x0[0, policy.chunk_slice])[: policy.spec.n_action_steps]
    assert ours.shape == ref.shape == (policy.spec.n_action_steps, 4)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    assert float(ref[:, :3].abs().max()) > 1e-4


# Seeds where the shipped policy stacks unsteered (nominal, bench seeds 0-99: docs/results/robosuite/stack/baseline)
# and the obstacle variant's wall, across the carry it learned, ends the same seed.
NOMINAL_SEEDS = (0, 1)


def test_policy_stacks_on_nominal_and_the_wall_stops_it_on_the_same_seeds(policy):
    from policy_steer.runtime.sim_loop import RuntimeConfig, run_episode
    from policy_steer.steered_policy import SteeredPolicy

    cfg = RuntimeConfig()
    steered = SteeredPolicy.from_method(policy, "none", {})
    outcomes = {}
    for variant in ("nominal", "obstacle"):
        env = make("stack", variant)
        try:
            outcomes[variant] = [run_episode(env, steered, cfg, seed=s) for s in NOMINAL_SEEDS]
        finally:
            env.close()
    assert all(r.success for r in outcomes["nominal"]), [(r.success, r.failure) for r in outcomes["nominal"]]
    assert not any(r.success for r in outcomes["obstacle"])
    assert all(r.failure == "collision:obstacle" for r in outcomes["obstacle"])
