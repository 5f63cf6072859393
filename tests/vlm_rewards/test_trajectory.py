"""Trajectory maps: delta cumulative sum, absolute targets, joint targets through forward kinematics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from policy_steer.errors import ConfigError, ValidationError
from policy_steer.vlm_rewards import ChunkMap, TrajectoryMap


def test_delta_cumsum_values_scale_and_clip():
    a = torch.tensor([[[0.01, 0.0, 0.0, 1.0], [0.01, 0.02, 0.0, -1.0], [0.0, 0.0, -0.05, 1.0]]])
    ee = torch.tensor([0.5, 0.0, 0.2])
    traj, grip = TrajectoryMap("delta", gripper_index=3)(a, ee_start=ee)
    expected = torch.tensor([[[0.51, 0.0, 0.2], [0.52, 0.02, 0.2], [0.52, 0.02, 0.15]]])
    assert torch.allclose(traj, expected)
    assert torch.equal(grip, a[..., 3])
    clipped, _ = TrajectoryMap("delta", max_step=0.03)(a, ee_start=ee)
    assert clipped[0, 2, 2].item() == pytest.approx(0.17)  # -0.05 clipped to -0.03, as the env does
    scaled, none = TrajectoryMap("delta", scale=2.0)(a[..., :3], ee_start=ee.expand(1, 3))
    assert torch.allclose(scaled - ee, 2 * (expected - ee))
    assert none is None


def test_delta_per_candidate_start_and_gradient():
    a = torch.zeros(4, 5, 3, requires_grad=True)
    ee = torch.arange(12, dtype=torch.float32).reshape(4, 3)
    traj, _ = TrajectoryMap("delta")(a, ee_start=ee)
    assert traj.shape == (4, 5, 3)
    assert torch.allclose(traj, ee[:, None, :].expand(4, 5, 3))
    traj[:, -1].sum().backward()
    assert torch.all(a.grad == 1)  # every step moves the last position one for one


def test_absolute_targets_are_the_trajectory():
    a = torch.rand(2, 6, 4)
    traj, grip = TrajectoryMap("absolute", gripper_index=3)(a)
    assert torch.equal(traj, a[..., :3]) and torch.equal(grip, a[..., 3])


def planar_fk(q: torch.Tensor) -> torch.Tensor:
    """A small analytic arm: base yaw q0, then two pitch links of 0.3 m (q1 from vertical, q2 relative)."""
    yaw, a1, a2 = q[..., 0], q[..., 1], q[..., 1] + q[..., 2]
    r = 0.3 * torch.sin(a1) + 0.3 * torch.sin(a2)
    z = 0.3 * torch.cos(a1) + 0.3 * torch.cos(a2)
    return torch.stack([r * torch.cos(yaw), r * torch.sin(yaw), z], dim=-1)


def test_joint_targets_through_an_analytic_fk():
    q = torch.tensor([[[0.0, 0.0, 0.0, 1.0], [math.pi / 2, math.pi / 2, 0.0, -1.0], [0.0, math.pi / 2, -math.pi / 2, 1.0]]])
    traj, grip = TrajectoryMap("joint", fk=planar_fk, n_joints=3, gripper_index=3)(q)
    expected = torch.tensor([[[0.0, 0.0, 0.6], [0.0, 0.6, 0.0], [0.3, 0.0, 0.3]]])
    assert torch.allclose(traj, expected, atol=1e-6)
    assert torch.equal(grip, q[..., 3])


def test_joint_deltas_cumulate_from_the_start():
    dq = torch.tensor([[[0.0, math.pi / 4, 0.0], [0.0, math.pi / 4, 0.0]]], dtype=torch.float64, requires_grad=True)
    traj, _ = TrajectoryMap("joint_delta", fk=planar_fk, n_joints=3)(dq, q_start=torch.zeros(3, dtype=torch.float64))
    assert torch.allclose(traj[0, 1], torch.tensor([0.6, 0.0, 0.0], dtype=torch.float64))
    assert torch.autograd.gradcheck(lambda d: TrajectoryMap("joint_delta", fk=planar_fk, n_joints=3)(d, q_start=torch.zeros(3, dtype=torch.float64))[0], (dq,))


def test_joint_map_defaults_to_the_tasks_arm_and_matches_mujoco():
    import mujoco

    from policy_steer.envs.arm import ARM_JOINTS, EE_SITE, arm_only_xml

    model = mujoco.MjModel.from_xml_string(arm_only_xml())
    data = mujoco.MjData(model)
    qadr = [model.jnt_qposadr[model.joint(j).id] for j in ARM_JOINTS]
    rng = np.random.default_rng(0)
    q = rng.uniform(-0.8, 0.8, size=(1, 4, len(ARM_JOINTS)))
    expected = []
    for qi in q[0]:
        data.qpos[qadr] = qi
        mujoco.mj_kinematics(model, data)
        expected.append(data.site(EE_SITE).xpos.copy())
    from policy_steer.envs.kinematics import fk

    tmap = TrajectoryMap("joint", fk=fk, n_joints=len(ARM_JOINTS))
    qt = torch.tensor(q, requires_grad=True)
    traj, _ = tmap(qt)
    assert np.allclose(traj.detach().numpy()[0], np.array(expected), atol=1e-9)
    traj.sum().backward()
    assert torch.isfinite(qt.grad).all() and qt.grad.abs().sum() > 0


def test_chunk_map_unnormalises_first():
    mean, std = torch.tensor([0.0, 0.0, 0.0, 0.0]), torch.tensor([0.01, 0.01, 0.01, 1.0])
    cm = ChunkMap(TrajectoryMap("delta", gripper_index=3), unnormalize=lambda x: x * std + mean, ee_start=torch.zeros(3))
    x = torch.ones(2, 3, 4)
    traj, grip = cm(x)
    assert torch.allclose(traj[:, -1], torch.full((2, 3), 0.03))
    assert torch.allclose(grip, torch.ones(2, 3))


def test_map_errors():
    with pytest.raises(ConfigError):
        TrajectoryMap("polar")
    with pytest.raises(ConfigError, match="forward kinematics"):
        TrajectoryMap("joint")
    with pytest.raises(ValidationError, match="ee_start"):
        TrajectoryMap("delta")(torch.zeros(1, 2, 3))
    with pytest.raises(ValidationError, match="actions"):
        TrajectoryMap("delta")(torch.zeros(2, 3), ee_start=torch.zeros(3))


def test_map_for_a_task_env_agrees_with_the_envs_trajectory():
    """The reward's map, built from the robot description the env sends, is the env's own execution model."""
    from policy_steer import envs
    from policy_steer.envs.trajectory import ee_trajectory
    from policy_steer.steering.vls.chunk_reward import trajectory_map_for

    env = envs.make("pick-place", "nominal", render_mode=None)
    try:
        tmap = trajectory_map_for(env.unwrapped.episode_context().robot, 4, "zero")
        assert (tmap.space, tmap.max_step, tmap.gripper_index) == ("delta", env.max_step, 3)
        a = torch.randn(2, 5, 4) * 0.05
        ee = torch.rand(2, 3)
        traj, grip = tmap(a, ee_start=ee)
        assert torch.allclose(traj, ee_trajectory(a, ee, "delta", env.max_step))
        assert torch.equal(grip, a[..., 3])
    finally:
        env.close()
