"""What each shift variant draws, with its documented ranges.

The five variants (``VARIANTS`` in :mod:`policy_steer.envs.base`) share one seeded *base layout*
(robot start, objects, goal): a reset draws it from one random stream and the variant's extras from a
second one, so the same seed gives the same base problem in every variant and a nominal episode can
be replayed in a shifted one.

Where each task puts its obstacle and distractors, and when its goal jumps, is in the docstrings of
:mod:`policy_steer.envs.tasks.reach`, :mod:`~policy_steer.envs.tasks.push` and
:mod:`~policy_steer.envs.tasks.pick_place`.

- ``obstacle``: a static obstacle on the path the demonstration of this seed takes. Contact of the robot or the manipulated object with it ends the episode:
  ``failure = "collision:obstacle"``.
- ``shifted-surface``: the table and everything on it moved by ``(dx, dy, dz)``, with
  ``|dx|, |dy|`` in :attr:`ShiftSpec.surface_xy` and ``|dz|`` in :attr:`ShiftSpec.surface_z` (signs
  random). The robot's base does not move. ``Scene.surface_height`` and the ``table`` object say
  where the table is.
- ``clutter``: :attr:`ShiftSpec.n_distractors` free objects standing on the table at
  :attr:`ShiftSpec.distractor_ring` metres (horizontally) from the goal. Robot contact with one, or
  one displaced by more than :attr:`ShiftSpec.knock_distance`, ends the episode:
  ``failure = "collision:distractor"``.
- ``moving-goal``: the goal jumps once, at a seeded control step (task-specific range), to a new
  place at least :attr:`ShiftSpec.goal_jump_min` from the old one; ``info["goal_jump_step"]`` says
  when, and the state shows the new goal from that step on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ShiftSpec:
    surface_xy: tuple[float, float] = (0.02, 0.05)  # |dx|, |dy| of the table shift, metres
    surface_z: tuple[float, float] = (0.02, 0.04)  # |dz| of the table shift, metres
    n_distractors: int = 3
    distractor_ring: tuple[float, float] = (0.065, 0.09)  # horizontal distance from the goal, metres
    distractor_spacing: float = 0.05  # minimum distance between two distractors
    knock_distance: float = 0.01  # metres of displacement that count as knocking a distractor over
    goal_jump_min: float = 0.08  # metres between the old and the new goal


SHIFTS = ShiftSpec()


def surface_offset(rng: np.random.Generator, spec: ShiftSpec = SHIFTS) -> np.ndarray:
    """[3] table shift: each component's magnitude in its range, with a random sign."""
    mags = np.array([rng.uniform(*spec.surface_xy), rng.uniform(*spec.surface_xy), rng.uniform(*spec.surface_z)])
    signs = rng.choice([-1.0, 1.0], size=3)
    return mags * signs


def ring_positions(
    rng: np.random.Generator,
    centre: np.ndarray,
    n: int,
    radius: tuple[float, float],
    spacing: float,
    free_direction: np.ndarray | None = None,
    free_half_angle: float = 0.0,
    existing: list[np.ndarray] | None = None,
    attempts: int = 500,
) -> np.ndarray:
    """[n, 2] points at ``radius`` from ``centre`` (xy), pairwise ``spacing`` apart, none within
    ``free_half_angle`` radians of ``free_direction`` (a sector kept clear, e.g. where the block comes from)
    and none within ``spacing`` of the ``existing`` points [2]."""
    out: list[np.ndarray] = []
    taken = list(existing or [])
    free_angle = None if free_direction is None else float(np.arctan2(free_direction[1], free_direction[0]))
    for _ in range(attempts):
        if len(out) == n:
            break
        a = rng.uniform(-np.pi, np.pi)
        if free_angle is not None and abs((a - free_angle + np.pi) % (2 * np.pi) - np.pi) < free_half_angle:
            continue
        p = centre[:2] + rng.uniform(*radius) * np.array([np.cos(a), np.sin(a)])
        if all(np.linalg.norm(p - q) >= spacing for q in out + taken):
            out.append(p)
    if len(out) < n:  # the constraints are loose enough that this does not happen; fail loudly if it does
        raise RuntimeError(f"could not place {n} distractors around {centre[:2]}")
    return np.array(out)
