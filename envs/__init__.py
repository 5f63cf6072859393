"""Simulated tasks for policy-steer: plain-MuJoCo ``reach``, ``push``, ``pick-place`` and robosuite ``lift`` and ``stack``.

``make(task, variant)`` builds a :class:`~policy_steer.envs.base.TaskEnv`; the same tasks are
registered with gymnasium (``gymnasium.make("PolicySteer/Push-v0", variant="obstacle")``). Importing
this package is light: it imports gymnasium, not mujoco, robosuite or torch; each task module is
imported when its first env is made.

Offscreen rendering: ``MUJOCO_GL`` defaults to ``egl`` here (before anything imports mujoco), which
renders with Mesa's llvmpipe on machines without a GPU; see :mod:`policy_steer.envs.rendering`.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402
from gymnasium.envs.registration import load_env_creator  # noqa: E402

from policy_steer.envs.base import VARIANTS, TaskEnv  # noqa: E402
from policy_steer.errors import ConfigError  # noqa: E402

# task name -> gymnasium id
TASKS: dict[str, str] = {
    "reach": "PolicySteer/Reach-v0",
    "push": "PolicySteer/Push-v0",
    "pick-place": "PolicySteer/PickPlace-v0",
    "lift": "PolicySteer/Lift-v0",
    "stack": "PolicySteer/Stack-v0",
}
ENTRY_POINTS: dict[str, str] = {
    "reach": "policy_steer.envs.tasks.reach:ReachEnv",
    "push": "policy_steer.envs.tasks.push:PushEnv",
    "pick-place": "policy_steer.envs.tasks.pick_place:PickPlaceEnv",
    "lift": "policy_steer.envs.robosuite_lift:LiftEnv",
    "stack": "policy_steer.envs.robosuite_stack:StackEnv",
}

for _task, _id in TASKS.items():
    if _id not in gym.registry:
        # No max_episode_steps here: every TaskEnv truncates at its own max_episode_steps.
        gym.register(id=_id, entry_point=ENTRY_POINTS[_task])


def make(task: str, variant: str = "nominal", **kwargs) -> TaskEnv:
    """A new ``task`` env in ``variant``; ``kwargs`` go to the env (``cameras``, ``image_size``,
    ``action_mode``, ``variant_params={"obstacle.height": 0.08}`` (the variant's parameters:
    :mod:`policy_steer.envs.variants`), ...). Unknown names raise :class:`~policy_steer.errors.ConfigError`."""
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; use one of {list(TASKS)}")
    if variant not in VARIANTS:
        raise ConfigError(f"unknown variant {variant!r}; use one of {list(VARIANTS)}")
    return load_env_creator(ENTRY_POINTS[task])(variant=variant, **kwargs)


__all__ = ["TASKS", "VARIANTS", "ENTRY_POINTS", "TaskEnv", "make"]
