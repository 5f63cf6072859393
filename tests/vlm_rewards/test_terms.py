"""Compiled rewards: hand-computed values, finite gradients (gradcheck) for every term, and the
direction of the stay-clear gradient."""

from __future__ import annotations

import math

import pytest
import torch

from policy_steer.scene import Scene, SceneObject
from policy_steer.errors import ValidationError
from policy_steer.vlm_rewards import (
    ChunkMap,
    RewardProgram,
    TrajectoryMap,
    compile_program,
    registered_terms,
)
from policy_steer.vlm_rewards.args import Body
from policy_steer.vlm_rewards.geometry import signed_distance

SCENE = Scene(
    "test",
    "nominal",
    "test",
    objects=[
        SceneObject("ball", "obstacle", "sphere", [0.0, 0.0, 0.0], [0.1, 0.1, 0.1]),
        SceneObject("crate", "obstacle", "box", [0.0, 0.0, 0.0], [0.1, 0.05, 0.05], yaw=math.pi / 2),
        SceneObject("flat", "obstacle", "box", [0.0, 0.0, 0.0], [0.1, 0.05, 0.05]),
        SceneObject("can", "obstacle", "cylinder", [0.0, 0.0, 0.0], [0.05, 0.05, 0.1]),
    ],
    keypoints={"o": [0.0, 0.0, 0.0], "x": [1.0, 0.0, 0.0], "lifted": [0.0, 0.0, 0.1], "far": [1.0, 0.0, 0.5]},
    surface_height=0.0,
    workspace_low=[0.0, 0.0, 0.0],
    workspace_high=[1.0, 1.0, 1.0],
    ee_position=[0.5, 0.5, 0.5],
)


def stage(*terms: dict):
    program = RewardProgram.from_dict({"stages": [{"terms": list(terms)}]}, SCENE)
    return compile_program(program, SCENE)[0]


def t(term: str, weight: float = 1.0, **args):
    return {"term": term, "weight": weight, "args": args}


def traj(*points) -> torch.Tensor:
    return torch.tensor([points], dtype=torch.float64)  # [1, T, 3]


def test_reach_value_with_late_weighting():
    r = stage(t("reach", point="o", offset=[1, 0, 0], late_fraction=0.5, late_weight=3.0))
    # d^2 = [0, 1, 4, 0], weights [1, 1, 3, 3] -> -(0 + 1 + 12 + 0) / 8
    value = r(traj([1, 0, 0], [1, 1, 0], [1, 0, 2], [1, 0, 0]))
    assert value.item() == pytest.approx(-13 / 8)


def test_reach_default_weights_are_vls():
    r = stage(t("reach", point="o"))
    p = traj(*[[0, 0, 1]] * 7, *[[0, 0, 2]] * 3)  # T=10: the last 3 steps weigh 3
    assert r(p).item() == pytest.approx(-(7 * 1 + 3 * 3 * 4) / (7 + 9))


def test_move_along_value():
    r = stage(t("move_along", start="o", end="x", lateral_weight=2.0, late_fraction=0.0))
    # s = [0.25, 1.2]; to go [0.75, 0]; lateral^2 [0.01, 0.04]
    value = r(traj([0.25, 0.1, 0.0], [1.2, 0.0, 0.2]))
    assert value.item() == pytest.approx(-((0.5625 + 0.02) + (0 + 0.08)) / 2)


def test_move_along_planar_axis_is_horizontal_at_the_start_height():
    r = stage(t("move_along", start="lifted", end="far", planar=True, overshoot=-0.2, late_fraction=0.0))
    # axis +x at z=0.1, length 1 - 0.2; point 0.5 along, 0.05 above the axis
    assert r(traj([0.5, 0.0, 0.15])).item() == pytest.approx(-(0.3**2 + 0.05**2))


@pytest.mark.parametrize(
    "obj,shape,point,sd",
    [
        ("ball", "auto", [0.12, 0, 0], 0.02),
        ("ball", "auto", [0.0, 0.05, 0], -0.05),
        ("crate", "auto", [0.08, 0, 0], 0.03),  # yawed 90 degrees: 0.05 wide along world x
        ("flat", "auto", [0.08, 0, 0], -0.02),  # same box unrotated: the point is inside
        ("flat", "auto", [0.13, 0.09, 0], 0.05),  # off a vertical edge: (0.03, 0.04) -> 0.05
        ("can", "auto", [0.08, 0, 0], 0.03),
        ("can", "auto", [0, 0, 0.13], 0.03),
        ("can", "auto", [0.09, 0, 0.14], math.sqrt(0.04**2 + 0.04**2)),
        ("flat", "sphere", [0.2, 0, 0], 0.2 - math.sqrt(0.1**2 + 0.05**2 + 0.05**2)),
        ("ball", "box", [0.0, 0.13, 0.0], 0.03),
    ],
)
def test_signed_distances(obj, shape, point, sd):
    o = SCENE.object(obj)
    body = Body(o.name, o.shape, torch.tensor(o.position, dtype=torch.float64), torch.tensor(o.half_size, dtype=torch.float64), o.yaw)
    assert signed_distance(torch.tensor(point, dtype=torch.float64), body, shape).item() == pytest.approx(sd, abs=1e-6)


def test_stay_clear_value():
    r = stage(t("stay_clear", object="ball", margin=0.05, softness=0.0))
    # distances 0.02 (violation 0.03), 0.1 (none), -0.05 (violation 0.1): summed over time
    value = r(traj([0.12, 0, 0], [0, 0.2, 0], [0, 0, 0.05]))
    assert value.item() == pytest.approx(-(0.03**2 + 0.1**2), abs=1e-9)


def test_stay_clear_soft_hinge():
    r = stage(t("stay_clear", object="ball", margin=0.05, softness=0.01))
    value = r(traj([0.15, 0, 0]))  # exactly at the margin: softness * ln 2
    assert value.item() == pytest.approx(-((0.01 * math.log(2)) ** 2), rel=1e-6)


def test_stay_above_value_and_default_surface():
    r = stage(t("stay_above", margin=0.02, softness=0.0))
    assert r(traj([0, 0, 0.05], [0, 0, 0.01], [0, 0, -0.01])).item() == pytest.approx(-(0.01**2 + 0.03**2))
    r = stage(t("stay_above", margin=0.0, height=0.1, softness=0.0))
    assert r(traj([0, 0, 0.05])).item() == pytest.approx(-(0.05**2))


def test_stay_inside_value_and_workspace_default():
    r = stage(t("stay_inside", low=[0, 0, 0], high=[1, 1, 1], margin=0.1, softness=0.0))
    assert r(traj([0.05, 0.5, 1.2])).item() == pytest.approx(-(0.05**2 + 0.3**2))
    r = stage(t("stay_inside", softness=0.0))  # the scene's workspace: [0, 1]^3
    assert r(traj([-0.1, 0.5, 0.5], [0.5, 0.5, 0.5])).item() == pytest.approx(-(0.1**2))


def test_no_backtrack_value():
    r = stage(t("no_backtrack", start="o", end="x"))
    xs = [0, 0.1, 0.05, 0.2, 0.1]
    # steps [0.1, -0.05, 0.15, -0.1]: backwards 0.05 and 0.1
    assert r(traj(*[[x, 0, 0.3 * i] for i, x in enumerate(xs)])).item() == pytest.approx(-(0.05**2 + 0.1**2))


def test_smoothness_values():
    p = traj([0, 0, 0], [1, 0, 0], [3, 0, 0], [6, 0, 0])
    assert stage(t("smoothness", order=2))(p).item() == pytest.approx(-2.0)
    assert stage(t("smoothness", order=1))(p).item() == pytest.approx(-14.0)


def test_grip_value_and_no_gripper():
    r = stage(t("grip", command="close"))
    p = traj(*[[0, 0, 0]] * 4)
    g = torch.tensor([[1.0, -1.0, 0.0, 1.0]], dtype=torch.float64)
    assert r(p, g).item() == pytest.approx(-(0 + 4 + 1 + 0) / 4)
    assert r(p, None).item() == 0.0


def test_stage_is_the_weighted_sum_and_batched():
    r = stage(t("reach", 2.0, point="x"), t("smoothness", 0.5), t("stay_above", 10.0, margin=0.1, softness=0.0))
    x = torch.rand(5, 6, 3, dtype=torch.float64)
    parts = r.breakdown(x)
    assert len(parts) == 3
    assert torch.allclose(sum(parts.values()), r(x))
    assert r(x).shape == (5,)
    # each candidate is scored on its own
    assert torch.allclose(r(x[2:3]), r(x)[2:3])
    # float32 in, float32 out
    assert r(x.float()).dtype == torch.float32


def test_bad_trajectory_shapes_are_refused():
    r = stage(t("reach", point="x"))
    with pytest.raises(ValidationError, match="traj"):
        r(torch.zeros(4, 3))
    with pytest.raises(ValidationError, match="gripper"):
        r(torch.zeros(2, 4, 3), torch.zeros(2, 5))


# --------------------------------------------------------------------------- gradients

GRAD_TERMS = {
    "reach": t("reach", point="x", offset=[0, 0.1, 0]),
    "move_along": t("move_along", start="o", end="far", lateral_weight=2.0),
    "stay_clear": t("stay_clear", object="crate", margin=0.3),
    "stay_above": t("stay_above", margin=0.6),
    "stay_inside": t("stay_inside", margin=0.3),
    "no_backtrack": t("no_backtrack", start="o", end="x", softness=0.01),
    "smoothness": t("smoothness", order=3),
    "grip": t("grip", command="open", late_fraction=0.5),
    "reach_above_surface": t("reach_above_surface", point="x", height=0.3, dx=0.1),
    "clear_box": t("clear_box", object="flat", margin=0.3, reach=0.4),
}


def test_every_registered_term_has_a_gradient_test():
    assert set(GRAD_TERMS) == set(registered_terms())


@pytest.mark.parametrize("name", sorted(GRAD_TERMS))
def test_gradcheck(name):
    r = stage(GRAD_TERMS[name])
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(2, 5, 3, generator=gen, dtype=torch.float64) * 0.6).requires_grad_()
    g = (torch.rand(2, 5, generator=gen, dtype=torch.float64) * 2 - 1).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: r(a, b), (x, g))
    r(x, g).sum().backward()
    moved = g.grad if name == "grip" else x.grad  # grip reads only the gripper, the others only traj
    assert torch.isfinite(moved).all() and moved.abs().sum() > 0


@pytest.mark.parametrize("obj", ["ball", "crate", "can"])
def test_stay_clear_gradient_points_away_from_the_object(obj):
    r = stage(t("stay_clear", object=obj, margin=0.1))
    o = SCENE.object(obj)
    body = Body(o.name, o.shape, torch.tensor(o.position, dtype=torch.float64), torch.tensor(o.half_size, dtype=torch.float64), o.yaw)
    gen = torch.Generator().manual_seed(1)
    directions = torch.nn.functional.normalize(torch.randn(1, 20, 3, generator=gen, dtype=torch.float64), dim=-1)
    points = (directions * (0.12 + 0.02 * torch.rand(1, 20, 1, generator=gen, dtype=torch.float64))).requires_grad_()
    sd = signed_distance(points.detach(), body)
    assert bool((sd < 0.1).all()), "all points inside the margin"
    r(points).sum().backward()
    step = 1e-3 * torch.nn.functional.normalize(points.grad, dim=-1)
    # ascending the reward moves every point away from the object
    assert bool((signed_distance(points.detach() + step, body) > sd).all())
    if obj == "ball":
        cos = torch.nn.functional.cosine_similarity(points.grad, points.detach(), dim=-1)
        assert bool((cos > 0.999).all())


def test_reward_on_a_normalised_chunk_through_the_chunk_map():
    r = stage(t("reach", point="x", late_fraction=0.0))
    mean, std = torch.tensor([0.0, 0.0, 0.0]), torch.tensor([0.1, 0.1, 0.1])
    chunk_map = ChunkMap(TrajectoryMap("delta"), unnormalize=lambda x: x * std + mean, ee_start=torch.tensor([0.0, 0.0, 0.0]))
    x = torch.zeros(3, 4, 3, requires_grad=True)
    with torch.no_grad():
        x[:, :, 0] = 2.5  # 0.25 m per step along x -> reaches x = 1 at the last step
    value = r.on_chunk(x, chunk_map)
    d2 = torch.tensor([0.75**2, 0.5**2, 0.25**2, 0.0])
    assert torch.allclose(value, torch.full((3,), -float(d2.mean())))
    value.sum().backward()
    # d/dx_k = std * 2/T * sum_{h >= k} (1 - p_h): moving x further helps every step not yet there
    expected = torch.tensor([0.075, 0.0375, 0.0125, 0.0]).expand(3, 4)
    assert torch.allclose(x.grad[..., 0], expected)
    assert torch.all(x.grad[..., 1:] == 0)
