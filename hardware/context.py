"""The episode context a robot host sends: instruction, scene, robot description.

The server's steering strategies need to know the episode beyond the observation (VLS its scene: the
objects, the goal, obstacles). A robot host sends an :class:`~policy_steer.types.EpisodeContext` at
every episode start and, when the scene changes, again before the next chunk request:

- ``policy-steer sim-robot``: the simulator's ground truth (``TaskEnv.episode_context``), read at the
  episode start and before every request (objects move);
- ``policy-steer robot``: ``--instruction`` and ``--scene FILE.json`` (:func:`load_scene_file`: a scene
  alone or a whole context, checked against ``policy_steer/schema/episode_context.schema.json``), and
  the arm's robot description (action space, state layout);
- a perception module: a :class:`ContextProvider` given to the host in Python::

      from policy_steer.hardware.host import RobotConfig, RobotHost, run_host

      class Cameras:                       # anything with these two members
          dynamic_scene = True             # the scene changes during an episode: asked before every request
          def context(self, base, seed):   # base: --instruction, --scene, the arm's robot description
              return base.with_scene(my_detector.scene(), stamp=time.monotonic())

      run_host(RobotHost(RobotConfig(driver="lerobot:so101_follower", ...), context_provider=Cameras()))

  The host calls ``context(base, seed)`` at every episode start and, when ``dynamic_scene`` is True,
  before every chunk request (the result goes out as a ``context`` update). ``base`` is the context
  built from the options; return it, or a new one (``base.with_scene(...)``, ``dataclasses.replace``).
  The provider runs on the control thread: keep it fast, or have it return the latest scene a
  perception thread of its own computed. Nothing is imported by name from a command line or a file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol, runtime_checkable

from policy_steer.errors import ConfigError, ValidationError
from policy_steer.scene import Scene
from policy_steer.types import EpisodeContext


@runtime_checkable
class ContextProvider(Protocol):
    """A perception module's hook into a robot host (see the module docstring)."""

    dynamic_scene: bool  # True: context() is called again before every chunk request

    def context(self, base: EpisodeContext, seed: int | None) -> EpisodeContext:
        """The episode context to send, given the one the host built from its options."""


def load_scene_file(path: str | Path) -> EpisodeContext:
    """A ``--scene FILE.json``: a scene alone (an object with ``objects``) or a whole episode context.

    Checked against the published schema; any problem (a missing file, bad JSON, a schema violation) is
    one :class:`~policy_steer.errors.ConfigError` naming the file and the place in it.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--scene {p}: no such file")
    try:
        data = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"--scene {p}: not valid JSON ({e})") from None
    try:
        if isinstance(data, dict) and "objects" in data:  # a scene alone
            return EpisodeContext(scene=Scene.from_dict(data))
        return EpisodeContext.from_dict(data)
    except ValidationError as e:
        raise ConfigError(f"--scene {p}: {e}") from None
