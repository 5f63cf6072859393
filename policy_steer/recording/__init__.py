"""Recording and live views of runs: ROS 2 bags (rosbag2 folders, MCAP storage) and a Foxglove server.

- :mod:`~policy_steer.recording.messages`: the topics and the ROS 2 messages built from a run's data;
- :mod:`~policy_steer.recording.sinks`: a bag folder (``rosbags``) or a live Foxglove WebSocket server;
- :mod:`~policy_steer.recording.recorder`: the non-blocking recorder, a control-loop observer;
- :mod:`~policy_steer.recording.summary`: what a bag holds (``policy-steer bag summary``).

The core's rule holds here too: nothing is imported from ``envs`` or ``hardware``; everything arrives
as data (observations, the episode context, chunks with their info, the executed steps).
"""

import importlib
from typing import Any

__all__ = ["Recorder", "BagSink", "LiveView", "refuse_existing"]
# Imported on first use (PEP 562): the recording needs the optional `ros` extra (rosbags, foxglove-sdk),
# and a process that records nothing must not need it (``options`` checks a config without it).
_HOME = {"Recorder": "recorder", "BagSink": "sinks", "LiveView": "sinks", "refuse_existing": "sinks"}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        module = importlib.import_module(f"{__name__}.{_HOME[name]}")
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] in ("rosbags", "foxglove"):
            from policy_steer.errors import ConfigError

            raise ConfigError(f"recording needs {e.name.split('.')[0]}, which is not installed: "
                              'pip install "policy-steer[ros]"') from e
        raise
    return getattr(module, name)
