"""ZeroMQ transport of PROTOCOL.md v1: codec, policy server, robot client, telemetry, CURVE keys.

Nothing here imports torch: a robot-side process needs numpy, pyzmq and msgpack only.
"""

from policy_steer.transport.client import ChunkRequest, ClientConfig, PolicyClient, Welcome
from policy_steer.transport.errors import (
    BusyError,
    ClientClosed,
    ProtocolError,
    RemoteError,
    RequestTimeout,
    SpecChanged,
    TransportError,
)
from policy_steer.transport.server import PolicyServer, ServerConfig
from policy_steer.transport.telemetry import TelemetryPublisher, TelemetrySubscriber

__all__ = [
    "BusyError",
    "ChunkRequest",
    "ClientClosed",
    "ClientConfig",
    "PolicyClient",
    "PolicyServer",
    "ProtocolError",
    "RemoteError",
    "RequestTimeout",
    "ServerConfig",
    "SpecChanged",
    "TelemetryPublisher",
    "TelemetrySubscriber",
    "TransportError",
    "Welcome",
]
