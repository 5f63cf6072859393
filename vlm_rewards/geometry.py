"""Differentiable geometry the terms are built from: signed distances, soft hinges, time weights.

Everything broadcasts over leading dimensions; points are [..., 3] world metres.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F

from policy_steer.vlm_rewards.args import Body

_EPS = 1e-12  # inside square roots: a finite gradient at exactly zero distance


def safe_norm(v: Tensor) -> Tensor:
    """[..., k] -> [...] Euclidean norm with a finite gradient at 0."""
    return torch.sqrt((v * v).sum(-1) + _EPS)


def soft_relu(x: Tensor, softness: float) -> Tensor:
    """``softness * softplus(x / softness)``: a smooth max(x, 0) (exact ReLU when softness is 0).

    Squared, it gives a penalty that is zero (or nearly) where a constraint holds and grows
    quadratically with the violation, with a continuous gradient everywhere.
    """
    if softness <= 0:
        return torch.relu(x)
    return softness * F.softplus(x / softness)


def late_weights(t: int, late_fraction: float, late_weight: float, like: Tensor) -> Tensor:
    """[T] weights: 1, and ``late_weight`` on the last ``late_fraction`` of the steps (VLS: 30%, 3x)."""
    w = torch.ones(t, dtype=like.dtype, device=like.device)
    n_late = int(math.floor(late_fraction * t + 1e-9))
    if n_late > 0:
        w[t - n_late :] = late_weight
    return w


def weighted_mean(v: Tensor, w: Tensor) -> Tensor:
    """[B, T] values, [T] weights -> [B] weighted mean over time."""
    return (v * w).sum(-1) / w.sum()


def yaw_to_local(p: Tensor, centre: Tensor, yaw: float) -> Tensor:
    """World points [..., 3] -> the object's frame (rotated by -yaw about z), origin at its centre."""
    d = p - centre
    c, s = math.cos(yaw), math.sin(yaw)
    x = c * d[..., 0] + s * d[..., 1]
    y = -s * d[..., 0] + c * d[..., 1]
    return torch.stack([x, y, d[..., 2]], dim=-1)


def sd_sphere(p: Tensor, centre: Tensor, radius: Tensor | float) -> Tensor:
    """[..., 3] -> [...] signed distance to a sphere (negative inside)."""
    return safe_norm(p - centre) - radius


def sd_box(p: Tensor, centre: Tensor, half_size: Tensor, yaw: float = 0.0) -> Tensor:
    """[..., 3] -> [...] signed distance to a box rotated by ``yaw`` about z (negative inside)."""
    q = yaw_to_local(p, centre, yaw).abs() - half_size
    outside = safe_norm(torch.relu(q))
    inside = torch.clamp(q.amax(dim=-1), max=0.0)
    return outside + inside


def sd_cylinder(p: Tensor, centre: Tensor, radius: Tensor, half_height: Tensor) -> Tensor:
    """[..., 3] -> [...] signed distance to an upright cylinder (negative inside)."""
    d = p - centre
    q = torch.stack([safe_norm(d[..., :2]) - radius, d[..., 2].abs() - half_height], dim=-1)
    return safe_norm(torch.relu(q)) + torch.clamp(q.amax(dim=-1), max=0.0)


def signed_distance(p: Tensor, body: Body, shape: str = "auto") -> Tensor:
    """[..., 3] -> [...] signed distance to ``body`` as ``shape`` (auto: its own shape).

    ``sphere`` on a box or cylinder uses the circumscribed sphere (conservative); ``box`` on a sphere
    or cylinder uses the bounding box.
    """
    centre = body.centre.to(p)
    half = body.half_size.to(p)
    shape = body.shape if shape == "auto" else shape
    if shape == "sphere":
        radius = half[0] if body.shape == "sphere" else torch.linalg.vector_norm(half)
        return sd_sphere(p, centre, radius)
    if shape == "cylinder":
        return sd_cylinder(p, centre, half[0], half[2])
    return sd_box(p, centre, half, body.yaw)


def axis(start: Tensor, end: Tensor, planar: bool) -> tuple[Tensor, Tensor]:
    """Unit direction [3] from ``start`` to ``end`` (horizontal when ``planar``) and its length."""
    d = end - start
    if planar:
        d = torch.stack([d[0], d[1], torch.zeros_like(d[2])])
    length = torch.linalg.vector_norm(d)
    return d / length, length
