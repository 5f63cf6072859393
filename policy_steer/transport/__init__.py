"""ZeroMQ transport of protocol v2 (docs/protocol.md): codec, policy server, robot client, telemetry, CURVE keys.

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
from policy_steer.transport.inference import BatchItem, BatchPolicy, ServedPolicy
from policy_steer.transport.limits import ServerLimits
from policy_steer.transport.messages import PROTOCOL_VERSION
from policy_steer.transport.server import PolicyServer, ServerConfig
from policy_steer.transport.telemetry import TelemetryPublisher, TelemetrySubscriber

__all__ = [
    "PROTOCOL_VERSION",
    "BatchItem",
    "BatchPolicy",
    "BusyError",
    "ChunkRequest",
    "ClientClosed",
    "ClientConfig",
    "PolicyClient",
    "PolicyServer",
    "ProtocolError",
    "RemoteError",
    "RequestTimeout",
    "ServedPolicy",
    "ServerConfig",
    "ServerLimits",
    "SpecChanged",
    "TelemetryPublisher",
    "TelemetrySubscriber",
    "TransportError",
    "Welcome",
]
