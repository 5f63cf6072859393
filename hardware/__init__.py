"""policy_steer.hardware: the robot-side host and its drivers, behind a safety layer and a watchdog.

The robot computer's side of DESIGN.md's data flow: one host (:mod:`~policy_steer.hardware.host`:
connection, safety layer, telemetry, report, signals) for a real arm, the virtual arm and a simulated
task. Every command to a driver passes through the safety layer; nothing in the core
(``policy_steer.*`` outside this package) imports it.

- :mod:`~policy_steer.hardware.arm`: the ``Arm`` interface (observe, command, limits, rate, safe stop);
- :mod:`~policy_steer.hardware.limits`: joint ranges, workspace box, velocities; narrowing from a file;
- :mod:`~policy_steer.hardware.spaces`: what a policy's action vector means (``ee_delta``,
  ``ee_absolute``, ``joint``);
- :mod:`~policy_steer.hardware.observation`: arm readings -> lerobot observation keys;
- :mod:`~policy_steer.hardware.command_filter`: clamp, step limit, workspace, non-finite rejection;
- :mod:`~policy_steer.hardware.chunk_guard`: chunks validated on arrival; only their rows are executed;
- :mod:`~policy_steer.hardware.watchdog`: hold on a lost link or stale chunks, safe stop after a timeout;
- :mod:`~policy_steer.hardware.estop`: the control socket and ``policy-steer estop``;
- :mod:`~policy_steer.hardware.interventions`: every intervention logged, counted, published;
- :mod:`~policy_steer.hardware.safety`: the safety layer itself (the runtime's ``Robot``);
- :mod:`~policy_steer.hardware.drivers`: ``virtual`` (MuJoCo), ``lerobot:<type>`` (any lerobot robot) and
  :mod:`~policy_steer.hardware.drivers.sim_task` (a simulated task of ``policy_steer.envs``);
- :mod:`~policy_steer.hardware.context`: the episode context a host sends (``--scene FILE.json``, the
  ``ContextProvider`` hook for a perception module);
- :mod:`~policy_steer.hardware.host` and :mod:`~policy_steer.hardware.cli`: ``policy-steer robot`` and
  ``policy-steer sim-robot`` (one host, one set of options), ``policy-steer estop``.

Names are imported lazily (``from policy_steer.hardware import SafetyLayer``): importing the package
pulls in neither MuJoCo nor lerobot.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Arm": "arm", "ArmObservation": "arm", "CameraFrame": "arm", "JointCommand": "arm", "EeCommand": "arm",
    "Kinematics": "arm", "ArmLimits": "limits", "CommandFilter": "command_filter", "SafetyLayer": "safety",
    "SafetyStep": "safety", "Watchdog": "watchdog", "WatchdogConfig": "watchdog", "EstopServer": "estop",
    "send_estop": "estop", "make_space": "spaces", "ObservationMap": "observation", "make_arm": "drivers",
    "RobotHost": "host", "HostOptions": "host", "RobotConfig": "host", "SimRobotConfig": "host", "run_host": "host",
    "ContextProvider": "context", "load_scene_file": "context", "EeStep": "arm",
    "DriverUnavailable": "errors", "SafetyError": "errors", "ArmStopped": "errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
