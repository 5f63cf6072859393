"""Scripted experts: ``make_expert(task)`` -> an :class:`~policy_steer.envs.experts.motion.Expert`.

An expert is reset with the env it acts in (it may read privileged state through ``env.unwrapped``,
e.g. the seed's demonstration mode) and maps observations to actions in the env's action mode.
"""

from __future__ import annotations

import importlib

from policy_steer.errors import ConfigError

EXPERTS: dict[str, str] = {
    "reach": "policy_steer.envs.experts.reach:ReachExpert",
    "push": "policy_steer.envs.experts.push:PushExpert",
    "pick-place": "policy_steer.envs.experts.pick_place:PickPlaceExpert",
    "lift": "policy_steer.envs.experts.lift:LiftExpert",
    "stack": "policy_steer.envs.experts.stack:StackExpert",
}


def make_expert(task: str):
    """A fresh scripted expert for ``task`` (imported on demand)."""
    if task not in EXPERTS:
        raise ConfigError(f"no scripted expert for task {task!r}; use one of {sorted(EXPERTS)}")
    module, name = EXPERTS[task].split(":")
    return getattr(importlib.import_module(module), name)()
