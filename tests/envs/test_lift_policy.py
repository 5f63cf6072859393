"""The shipped robosuite Lift policy (checkpoints/lift-diffusion) and the Panda's published arm model.

- the policy loads through our adapter and its chunk on a real Lift observation is lerobot's own:
  ``predict_action_chunk`` and the ``select_action`` queue with the same initial noise;
- it lifts the cube on short seeded nominal runs, and the obstacle variant stops it on the same seeds
  (the variant changes the problem for the policy, not only for the expert: tests/envs/test_lift.py);
- the Panda's arm description (envs/robosuite_arm.py) is the simulated arm: its forward kinematics
  are the grip site's, and VLASH's ``kinematic`` estimator predicts the expert's end effector and
  joints a few steps ahead within millimetres.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from policy_steer.envs import make
from policy_steer.envs.experts import make_expert
from policy_steer.policies import load_policy
from policy_steer.runtime.arm_model import ArmModel
from policy_steer.runtime.future_state import auto_estimator, make_estimator
from policy_steer.runtime.sim_loop import RuntimeConfig, run_episode
from policy_steer.sampler import Sampler
from policy_steer.steered_policy import SteeredPolicy
from policy_steer.types import RobotDescription

CHECKPOINT = Path(__file__).resolve().parents[2] / "checkpoints" / "lift-diffusion"


@pytest.fixture(scope="module")
def policy():
    return load_policy(str(CHECKPOINT))


@pytest.fixture(scope="module")
def lift():
    env = make("lift")
    yield env
    env.close()


def _observation(env, seed: int) -> dict:
    obs, _ = env.reset(seed=seed)
    return {**obs, "task": env.instruction, "step": 0}


def _batch(adapter, obs: dict) -> dict:
    return adapter.preprocessor({
        "observation.state": torch.from_numpy(obs["observation.state"]),
        "observation.environment_state": torch.from_numpy(obs["observation.environment_state"]),
        "task": obs["task"],
    })


def test_shipped_lift_policy_describes_itself(policy):
    import json

    meta = json.loads((CHECKPOINT / "policy_steer.json").read_text())
    assert meta["task"] == "lift" and meta["control_hz"] == 20.0 and meta["action_mode"] == "delta"
    assert meta["trained_with"] == "lerobot.scripts.lerobot_train.train"
    spec = policy.spec
    assert spec.action_dim == 4 and spec.horizon == 16 and spec.n_action_steps == 12
    assert spec.observation["observation.state"].shape == (19,)
    assert (CHECKPOINT / "verifier" / "verifier.json").is_file()


def test_lift_chunk_equals_lerobots_own_with_the_same_noise(policy, lift):
    obs = _observation(lift, seed=7)
    noise = torch.randn(1, policy.model_horizon, 4, generator=torch.Generator().manual_seed(3))
    lerobot = policy.policy

    # lerobot's predict_action_chunk on the preprocessed batch
    lerobot.reset()
    batch = _batch(policy, obs)
    n = policy.config.n_obs_steps
    stacked = {k: torch.stack([batch[k]] * n, dim=1) for k in ("observation.state", "observation.environment_state")}
    with torch.no_grad():
        ref = policy.postprocessor(lerobot.predict_action_chunk(stacked, noise=noise.clone()))[0]

    # lerobot's select_action: the first call samples the chunk, the next ones pop its queue
    lerobot.reset()
    with torch.no_grad():
        queued = [policy.postprocessor(lerobot.select_action(_batch(policy, obs), noise=noise.clone()))[0]
                  for _ in range(policy.spec.n_action_steps)]
    queued = torch.stack(queued)

    # ours: the adapter's context and the one sampling loop
    policy.reset()
    res = Sampler(policy).sample(policy.prepare(obs), noise.clone())
    ours = policy.unnormalize_actions(res.x0[0, policy.chunk_slice])[: policy.spec.n_action_steps]

    assert ours.shape == ref.shape == queued.shape == (12, 4)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(queued, ref, atol=1e-5, rtol=1e-5)
    assert float(ref[:, :3].abs().max()) > 1e-4  # the policy moves the hand


# Seeds where the shipped policy lifts the cube unsteered (nominal, bench seeds 0-99) and the obstacle
# variant's wall, standing where the demonstrations come in low, ends the same seed.
NOMINAL_SEEDS = (0, 1)


def test_policy_lifts_on_nominal_and_the_wall_stops_it_on_the_same_seeds(policy):
    cfg = RuntimeConfig()
    steered = SteeredPolicy.from_method(policy, "none", {})
    nominal = make("lift")
    try:
        outcomes = [run_episode(nominal, steered, cfg, seed=s) for s in NOMINAL_SEEDS]
    finally:
        nominal.close()
    assert all(r.success for r in outcomes), [(r.success, r.failure) for r in outcomes]
    walled = make("lift", "obstacle")
    try:
        blocked = [run_episode(walled, steered, cfg, seed=s) for s in NOMINAL_SEEDS]
    finally:
        walled.close()
    assert not any(r.success for r in blocked)
    assert all(r.failure == "collision:obstacle" for r in blocked), [r.failure for r in blocked]


def test_physics_substeps_are_the_simulators():
    env = make("lift")
    try:
        assert env.substeps * env.model.opt.timestep == pytest.approx(1.0 / env.control_hz)
    finally:
        env.close()


def test_panda_arm_description_is_the_simulated_arm(lift):
    obs, _ = lift.reset(seed=4)
    robot = RobotDescription.from_env(lift)
    assert robot.arm is not None and auto_estimator(robot) == "kinematic"
    arm = ArmModel(robot.arm)
    arm.check_robot(robot)
    state = obs["observation.state"]
    lay = lift.state_layout
    np.testing.assert_allclose(arm.fk(state[lay["joint_pos"]].astype(np.float64)), state[lay["ee_pos"]], atol=1e-5)
    # the description crosses the wire as plain data and comes back the same
    again = RobotDescription.from_dict(robot.to_dict())
    assert again.arm == robot.arm


def test_kinematic_estimator_predicts_the_expert_four_steps_ahead(lift):
    obs, _ = lift.reset(seed=11)
    expert = make_expert("lift")
    expert.reset(lift, 11)
    robot = RobotDescription.from_env(lift)
    kinematic, delta = make_estimator("kinematic", robot), make_estimator("delta", robot)
    states, actions = [obs["observation.state"]], []
    for _ in range(40):  # approach and grasp: free motion, then contact
        a = expert.act(obs)
        actions.append(a)
        obs, _, terminated, truncated, _ = lift.step(a)
        states.append(obs["observation.state"])
        if terminated or truncated:
            break
    lay = lift.state_layout
    ee_err, joint_err, delta_joint_err = [], [], []
    for t in range(len(actions) - 4):
        pending, truth = np.asarray(actions[t:t + 4]), states[t + 4]
        k = kinematic.estimate(states[t], pending, robot)
        d = delta.estimate(states[t], pending, robot)
        ee_err.append(np.linalg.norm(k[lay["ee_pos"]] - truth[lay["ee_pos"]]))
        joint_err.append(np.abs(k[lay["joint_pos"]] - truth[lay["joint_pos"]]).max())
        delta_joint_err.append(np.abs(d[lay["joint_pos"]] - truth[lay["joint_pos"]]).max())
    assert max(ee_err) < 0.004, max(ee_err)
    assert float(np.mean(joint_err)) < 0.01, float(np.mean(joint_err))
    # the end-effector-only estimator leaves the joints where they were measured: the arm model does better
    assert float(np.mean(joint_err)) < 0.5 * float(np.mean(delta_joint_err))
