"""The built-in reward terms. Each returns a reward per candidate [B] (higher is better).

Conventions (so that weights mean the same thing across terms):

- goal terms (``reach``, ``move_along``) are a time-weighted *mean* of squared distances (m^2),
  with the last ``late_fraction`` of the steps weighted ``late_weight`` (VLS: last 30%, 3x);
- constraint terms (``stay_clear``, ``stay_above``, ``stay_inside``, ``no_backtrack``) are a *sum*
  over time of squared soft violations (m^2): one step inside an obstacle costs as much in a long
  chunk as in a short one;
- ``smoothness`` sums squared finite differences (m^2); ``grip`` is a mean squared command error.
"""

from __future__ import annotations

import torch
from torch import Tensor

from policy_steer.vlm_rewards import args
from policy_steer.vlm_rewards.args import Body
from policy_steer.vlm_rewards.geometry import axis, late_weights, safe_norm, sd_box, signed_distance, soft_relu, weighted_mean
from policy_steer.vlm_rewards.terms import TermInput, term

_LATE_FRACTION = args.number("fraction of the last steps weighted more", 0.3, minimum=0.0, maximum=1.0)
_LATE_WEIGHT = args.number("weight of those last steps (the others weigh 1)", 3.0, minimum=0.0)
_SOFTNESS = args.number("metres over which the penalty's hinge is rounded (0: exact hinge)", 0.005, minimum=0.0)


@term(
    "reach",
    "Bring the end effector to a point: -(weighted mean over time of squared distance).",
    goal=True,
    point=args.point("keypoint (or object centre) to reach"),
    offset=args.vec3("world-frame offset added to the point, metres", (0.0, 0.0, 0.0)),
    late_fraction=_LATE_FRACTION,
    late_weight=_LATE_WEIGHT,
)
def reach(x: TermInput, point: Tensor, offset: Tensor, late_fraction: float, late_weight: float) -> Tensor:
    goal = (point + offset).to(x.traj)
    d2 = ((x.traj - goal) ** 2).sum(-1)  # [B, T]
    return -weighted_mean(d2, late_weights(d2.shape[-1], late_fraction, late_weight, d2))


@term(
    "move_along",
    "Advance along the axis from `start` to `end` and stay on it: -(weighted mean of the squared "
    "distance still to go along the axis + lateral_weight * squared distance from the axis).",
    goal=True,
    start=args.point("keypoint (or object centre) the axis starts at"),
    end=args.point("keypoint (or object centre) the axis points to"),
    overshoot=args.number("metres to go beyond `end` along the axis (negative: stop short)", 0.0),
    lateral_weight=args.number("weight of the squared distance from the axis", 1.0, minimum=0.0),
    planar=args.flag("a horizontal axis at the height of `start`", False),
    late_fraction=_LATE_FRACTION,
    late_weight=_LATE_WEIGHT,
)
def move_along(
    x: TermInput,
    start: Tensor,
    end: Tensor,
    overshoot: float,
    lateral_weight: float,
    planar: bool,
    late_fraction: float,
    late_weight: float,
) -> Tensor:
    start, end = start.to(x.traj), end.to(x.traj)
    u, length = axis(start, end, planar)
    if float(length) < 1e-6:
        raise ValueError("start and end coincide: the axis has no direction")
    d = x.traj - start  # [B, T, 3]
    s = (d * u).sum(-1)  # [B, T] position along the axis
    lateral = d - s.unsqueeze(-1) * u
    to_go = soft_relu(length + overshoot - s, 0.0)  # nothing left to go once past the end
    cost = to_go**2 + lateral_weight * (lateral**2).sum(-1)
    return -weighted_mean(cost, late_weights(cost.shape[-1], late_fraction, late_weight, cost))


@term(
    "stay_clear",
    "Keep at least `margin` from an object: -(sum over time of soft_hinge(margin - signed distance)^2).",
    object=args.obj("the object to keep away from"),
    margin=args.number("clearance in metres (include the end effector's own radius)", 0.03, minimum=0.0),
    shape=args.choice("shape used: the object's own, its bounding sphere or its box", ("auto", "sphere", "box"), "auto"),
    softness=_SOFTNESS,
)
def stay_clear(x: TermInput, object: Body, margin: float, shape: str, softness: float) -> Tensor:  # noqa: A002
    sd = signed_distance(x.traj, object, shape)  # [B, T]
    return -(soft_relu(margin - sd, softness) ** 2).sum(-1)


@term(
    "stay_above",
    "Keep the end effector at least `margin` above a height: -(sum over time of soft_hinge(height + margin - z)^2).",
    margin=args.number("clearance in metres", 0.02, minimum=0.0),
    height=args.number("z of the surface, metres; null: the table top", None),
    softness=_SOFTNESS,
)
def stay_above(x: TermInput, margin: float, height: float | None, softness: float) -> Tensor:
    h = x.surface_height if height is None else height
    return -(soft_relu(h + margin - x.traj[..., 2], softness) ** 2).sum(-1)


@term(
    "stay_inside",
    "Keep the end effector inside an axis-aligned box, `margin` from its faces: "
    "-(sum over time and axes of the squared soft violations).",
    low=args.vec3("lower corner, metres; null: the workspace's", None),
    high=args.vec3("upper corner, metres; null: the workspace's", None),
    margin=args.number("metres to keep from the faces", 0.0, minimum=0.0),
    softness=_SOFTNESS,
)
def stay_inside(x: TermInput, low: Tensor | None, high: Tensor | None, margin: float, softness: float) -> Tensor:
    lo = x.workspace_low if low is None else low.to(x.traj)
    hi = x.workspace_high if high is None else high.to(x.traj)
    if bool((hi - lo <= 2 * margin).any()):
        raise ValueError(f"the region is empty: low {lo.tolist()}, high {hi.tolist()}, margin {margin}")
    below = soft_relu(lo + margin - x.traj, softness)
    above = soft_relu(x.traj - (hi - margin), softness)
    return -(below**2 + above**2).sum(dim=(-1, -2))


@term(
    "no_backtrack",
    "Penalise steps that move backwards along the axis from `start` to `end`: "
    "-(sum over steps of soft_hinge(-step . axis)^2).",
    start=args.point("keypoint (or object centre) the axis starts at"),
    end=args.point("keypoint (or object centre) the axis points to"),
    planar=args.flag("only the horizontal part of the axis counts", True),
    softness=args.number("metres over which the hinge is rounded (0: exact)", 0.0, minimum=0.0),
)
def no_backtrack(x: TermInput, start: Tensor, end: Tensor, planar: bool, softness: float) -> Tensor:
    u, length = axis(start.to(x.traj), end.to(x.traj), planar)
    if float(length) < 1e-6:
        raise ValueError("start and end coincide: the axis has no direction")
    steps = x.traj[:, 1:] - x.traj[:, :-1]  # [B, T-1, 3]
    return -(soft_relu(-(steps * u).sum(-1), softness) ** 2).sum(-1)


@term(
    "smoothness",
    "Penalise jerky motion: -(sum over time of the squared `order`-th finite difference of the positions).",
    order=args.integer("1: velocity, 2: acceleration, 3: jerk", 2, minimum=1, maximum=3),
)
def smoothness(x: TermInput, order: int) -> Tensor:
    d = x.traj
    for _ in range(order):
        d = d[:, 1:] - d[:, :-1]
    return -(d**2).sum(dim=(-1, -2))


@term(
    "grip",
    "Command the gripper open or closed: -(weighted mean of (command - target)^2), target +1 close, -1 open; "
    "0 when the action space has no gripper.",
    command=args.choice("the gripper command wanted", ("open", "close")),
    late_fraction=args.number("fraction of the last steps weighted more", 0.0, minimum=0.0, maximum=1.0),
    late_weight=_LATE_WEIGHT,
)
def grip(x: TermInput, command: str, late_fraction: float, late_weight: float) -> Tensor:
    if x.gripper is None:
        return x.traj.new_zeros(x.traj.shape[0])
    target = 1.0 if command == "close" else -1.0
    e2 = (x.gripper - target) ** 2
    return -weighted_mean(e2, late_weights(e2.shape[-1], late_fraction, late_weight, e2))


@term(
    "reach_above_surface",
    "Bring the end effector over a point, at a height above the table top the robot sees now: "
    "-(weighted mean over time of squared distance to (point.x + dx, point.y + dy, surface + height)). "
    "The height follows the table wherever it is (a moved or raised table), unlike an offset from the point.",
    goal=True,
    point=args.point("keypoint (or object centre) to be over"),
    height=args.number("metres above the table top", minimum=-0.05, maximum=1.0),
    dx=args.number("horizontal offset along world x, metres", 0.0),
    dy=args.number("horizontal offset along world y, metres", 0.0),
    late_fraction=_LATE_FRACTION,
    late_weight=_LATE_WEIGHT,
)
def reach_above_surface(x: TermInput, point: Tensor, height: float, dx: float, dy: float, late_fraction: float,
                        late_weight: float) -> Tensor:
    p = point.to(x.traj)
    goal = torch.stack([p[0] + dx, p[1] + dy, p.new_tensor(x.surface_height + height)])
    d2 = ((x.traj - goal) ** 2).sum(-1)  # [B, T]
    return -weighted_mean(d2, late_weights(d2.shape[-1], late_fraction, late_weight, d2))


@term(
    "clear_box",
    "Pass over an object by a margin: wherever the end effector is within `reach` (horizontally) of the "
    "object's footprint, keep it `margin` above the object's top: -(sum over time of "
    "soft_hinge(reach - horizontal distance) * soft_hinge(top + margin - z)^2 / reach). Away from the "
    "object it costs nothing (unlike stay_above, which holds the whole chunk high); near it, its gradient "
    "lifts the end effector and pushes it back from the footprint.",
    object=args.obj("the object to pass over (its footprint: its own shape, yaw included)"),
    margin=args.number("metres to keep above the object's top (include what hangs below the end effector)", 0.04, minimum=0.0),
    reach=args.number("horizontal metres from the footprint within which the height counts", 0.06, minimum=0.005),
    softness=_SOFTNESS,
)
def clear_box(x: TermInput, object: Body, margin: float, reach: float, softness: float) -> Tensor:  # noqa: A002
    centre, half = object.centre.to(x.traj), object.half_size.to(x.traj)
    top = centre[2] + half[2]
    flat = torch.cat([x.traj[..., :2], centre[2].expand(x.traj.shape[:-1]).unsqueeze(-1)], dim=-1)  # at the centre's height
    if object.shape in ("sphere", "cylinder"):
        planar = safe_norm(flat[..., :2] - centre[:2]) - half[0]
    else:
        planar = sd_box(flat, centre, torch.stack([half[0], half[1], half[2] + 1.0]), object.yaw)  # horizontal distance
    near = soft_relu(reach - planar.clamp(min=0.0), softness) / reach  # 0 away from the footprint, ~1 over it
    low = soft_relu(top + margin - x.traj[..., 2], softness)
    return -(near * low**2).sum(-1)
