"""The torch forward kinematics matches MuJoCo and is differentiable."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest
import torch

from policy_steer.envs import make
from policy_steer.envs.arm import ARM_JOINTS, JOINT_RANGE
from policy_steer.envs.kinematics import ArmKinematics, fk

from .conftest import PLAIN_TASKS


@pytest.mark.parametrize("task", PLAIN_TASKS)
def test_fk_matches_mujoco_site_xpos(task):
    env = make(task)
    u = env.unwrapped
    m, d = u.model, u.data
    env.reset(seed=0)
    rng = np.random.default_rng(1)
    lo = np.array([JOINT_RANGE[j][0] for j in ARM_JOINTS])
    hi = np.array([JOINT_RANGE[j][1] for j in ARM_JOINTS])
    q = rng.uniform(lo, hi, size=(64, len(ARM_JOINTS)))
    ours = fk(torch.tensor(q, dtype=torch.float64)).numpy()
    site = m.site("ee").id
    for i in range(len(q)):
        d.qpos[u._qadr] = q[i]
        mujoco.mj_kinematics(m, d)
        np.testing.assert_allclose(ours[i], d.site_xpos[site], atol=1e-5)


def test_fk_of_the_state_joints_is_the_state_ee():
    env = make("push")
    u = env.unwrapped
    obs, _ = env.reset(seed=2)
    for _ in range(5):
        obs, *_ = env.step(np.array([0.01, -0.01, -0.005], dtype=np.float32))
    s = torch.tensor(obs["observation.state"], dtype=torch.float64)
    np.testing.assert_allclose(fk(s[u.state_layout["joint_pos"]]).numpy(), s[u.state_layout["ee_pos"]].numpy(), atol=1e-5)


def test_fk_batches_and_has_gradients():
    q = torch.randn(4, 3, 5, dtype=torch.float64, requires_grad=True)
    assert fk(q).shape == (4, 3, 3)
    assert torch.autograd.gradcheck(fk, (q[:1, :2].detach().requires_grad_(),))
    pos, rot = ArmKinematics().pose(torch.zeros(5))
    assert rot.shape == (3, 3) and torch.allclose(rot @ rot.T, torch.eye(3), atol=1e-6)
    with pytest.raises(ValueError, match="5 joint angles"):
        fk(torch.zeros(4))
