"""Differentiable forward kinematics of the arm in torch, read from the MuJoCo model.

:class:`ArmKinematics` walks the kinematic chain from the world to a site (body offsets and
orientations, hinge axes and anchors, all taken from an ``MjModel``) and evaluates it for batches of
joint angles with torch ops, so gradients flow from an ee position back to the joints. ``fk(q)`` uses
the arm of :mod:`policy_steer.envs.arm` (the same for every plain-MuJoCo task) and its ``ee`` site;
it matches MuJoCo's ``site_xpos`` to float64 precision.
"""

from __future__ import annotations

from functools import lru_cache

import mujoco
import numpy as np
import torch

from policy_steer.envs.arm import ARM_JOINTS, EE_SITE, arm_only_xml


def _quat_to_matrix(q: np.ndarray) -> np.ndarray:
    m = np.zeros(9)
    mujoco.mju_quat2Mat(m, np.asarray(q, dtype=np.float64))
    return m.reshape(3, 3)


def _axis_angle(axis: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotation matrices [..., 3, 3] about the unit ``axis`` [3] by ``angle`` [...] (Rodrigues)."""
    x, y, z = axis
    k = torch.stack([
        torch.stack([torch.zeros_like(x), -z, y]),
        torch.stack([z, torch.zeros_like(x), -x]),
        torch.stack([-y, x, torch.zeros_like(x)]),
    ])
    s, c = torch.sin(angle)[..., None, None], torch.cos(angle)[..., None, None]
    eye = torch.eye(3, dtype=axis.dtype, device=axis.device)
    return eye + s * k + (1 - c) * (k @ k)


def _apply(rot: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """rot [..., 3, 3] applied to v [..., 3] (or [3])."""
    return (rot @ v.unsqueeze(-1)).squeeze(-1)


class ArmKinematics:
    """Forward kinematics of a serial chain of hinge joints ending at a site."""

    def __init__(self, model: mujoco.MjModel | None = None, site: str = EE_SITE, joints: tuple[str, ...] = ARM_JOINTS) -> None:
        model = mujoco.MjModel.from_xml_string(arm_only_xml()) if model is None else model
        site_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, site)
        if site_id < 0:
            raise ValueError(f"no site {site!r} in the model")
        chain = []
        b = int(model.site_bodyid[site_id])
        while b > 0:
            chain.append(b)
            b = int(model.body_parentid[b])
        chain.reverse()
        self.links: list[tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]] = []
        names = []
        for b in chain:
            if model.body_jntnum[b] > 1:
                raise ValueError(f"body {model.body(b).name!r} has more than one joint")
            axis = anchor = None
            if model.body_jntnum[b] == 1:
                j = int(model.body_jntadr[b])
                if model.jnt_type[j] != mujoco.mjtJoint.mjJNT_HINGE:
                    raise ValueError(f"joint {model.joint(j).name!r} is not a hinge")
                axis, anchor = model.jnt_axis[j].copy(), model.jnt_pos[j].copy()
                names.append(model.joint(j).name)
            self.links.append((model.body_pos[b].copy(), _quat_to_matrix(model.body_quat[b]), axis, anchor))
        if tuple(names) != tuple(joints):
            raise ValueError(f"the chain to {site!r} has joints {names}, expected {list(joints)}")
        self.site_pos = model.site_pos[site_id].copy()
        self.site_rot = _quat_to_matrix(model.site_quat[site_id])
        self.n_joints = len(names)

    def pose(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Site position [..., 3] and orientation [..., 3, 3] (world frame) for joints ``q`` [..., n]."""
        if q.shape[-1] != self.n_joints:
            raise ValueError(f"q must have {self.n_joints} joint angles in its last dim, got {tuple(q.shape)}")
        opts = {"dtype": q.dtype, "device": q.device}
        batch = q.shape[:-1]
        rot = torch.eye(3, **opts).expand(*batch, 3, 3)
        pos = torch.zeros(*batch, 3, **opts)
        i = 0
        for body_pos, body_rot, axis, anchor in self.links:
            pos = pos + _apply(rot, torch.as_tensor(body_pos, **opts))
            rot = rot @ torch.as_tensor(body_rot, **opts)
            if axis is not None:
                r = _axis_angle(torch.as_tensor(axis, **opts), q[..., i])
                a = torch.as_tensor(anchor, **opts)
                pos = pos + _apply(rot, a - _apply(r, a))  # rotate about the anchor, not the body origin
                rot = rot @ r
                i += 1
        pos = pos + _apply(rot, torch.as_tensor(self.site_pos, **opts))
        return pos, rot @ torch.as_tensor(self.site_rot, **opts)

    def __call__(self, q: torch.Tensor) -> torch.Tensor:
        return self.pose(q)[0]


@lru_cache(maxsize=1)
def default_kinematics() -> ArmKinematics:
    """The kinematics of the plain-MuJoCo tasks' arm (joints ``ARM_JOINTS``, site ``ee``)."""
    return ArmKinematics()


def fk(q: torch.Tensor) -> torch.Tensor:
    """End-effector (``ee`` site) positions [..., 3] in world metres for arm joint angles ``q`` [..., 5]."""
    return default_kinematics()(q)
