"""``policy-steer launch``: the processes of a use (server, robot, bridge, benchmark) from one YAML file.

- :mod:`~policy_steer.launch.config`: the launch-file schema (dataclasses, read with draccus) and its checks;
- :mod:`~policy_steer.launch.process`: one child process (own process group, prefixed output, signal escalation);
- :mod:`~policy_steer.launch.health`: readiness probes (protocol ping, telemetry message);
- :mod:`~policy_steer.launch.launcher`: bring up, watch, tear down, status tables;
- :mod:`~policy_steer.launch.cli`: the command.

Ready files are in the repository's ``launch/`` folder.
"""

from policy_steer.launch.config import LaunchFile, ProcessSpec, ReadySpec, load_launch
from policy_steer.launch.launcher import Launcher

__all__ = ["LaunchFile", "Launcher", "ProcessSpec", "ReadySpec", "load_launch"]
