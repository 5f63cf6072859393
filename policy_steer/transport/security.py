"""Who may reach the server: the loopback rule and CURVE with an allow-list of client keys.

Without CURVE anybody who can reach the port can drive the robot's policy, so the server binds only
loopback (``127.0.0.0/8``, ``::1``, ``localhost``) and local transports (``ipc://``, ``inproc://``)
unless told that the network is trusted. With CURVE, traffic is encrypted and only clients whose
public key is in the allow-list folder complete the handshake (ZeroMQ's ZAP, run by pyzmq's
``ThreadAuthenticator``).
"""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path

import zmq
from zmq.auth.thread import ThreadAuthenticator

from policy_steer.errors import ConfigError
from policy_steer.transport.keys import KeyPair, server_keys

log = logging.getLogger(__name__)


def endpoint_host(endpoint: str) -> str | None:
    """``tcp://host:port`` -> host (brackets removed); None for non-TCP transports."""
    scheme, sep, rest = endpoint.partition("://")
    if not sep:
        raise ConfigError(f"bad endpoint {endpoint!r}; use e.g. tcp://127.0.0.1:5555")
    if scheme not in ("tcp", "ipc", "inproc"):
        raise ConfigError(f"endpoint {endpoint!r}: transport {scheme!r} is not supported (tcp, ipc, inproc)")
    if scheme != "tcp":
        return None
    host, colon, port = rest.rpartition(":")
    if not colon or not port:
        raise ConfigError(f"endpoint {endpoint!r} has no port")
    if ";" in host:  # tcp://source;dest form: the bound address is after the ';'
        host = host.split(";")[-1]
    return host.strip("[]")


def is_loopback(endpoint: str) -> bool:
    host = endpoint_host(endpoint)
    if host is None:
        return True
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # '*', an interface name or a host name: not provably loopback


def check_bind(endpoint: str, curve: bool, trusted_network: bool) -> None:
    """Refuse to bind beyond loopback without CURVE unless the network is declared trusted."""
    if curve or is_loopback(endpoint):
        return
    if trusted_network:
        log.warning(
            "binding %s without CURVE: anyone on this network can reach the policy (--trusted_network)", endpoint
        )
        return
    raise ConfigError(
        f"refusing to bind {endpoint} without CURVE: it is not loopback. Make keys with "
        "'policy-steer keys --out DIR' and pass --curve_keys DIR, or pass --trusted_network true"
    )


class CurveServer:
    """The server side of CURVE: a key pair, and a ZAP authenticator that admits the allow-list only."""

    def __init__(self, context: zmq.Context, folder: str | Path) -> None:
        self.keys: KeyPair
        self.keys, self.allow_dir = server_keys(folder)
        self.auth = ThreadAuthenticator(context, log=logging.getLogger("policy_steer.transport.zap"))
        self.auth.start()
        self.auth.configure_curve(domain="*", location=str(self.allow_dir))
        self.n_allowed = len(list(Path(self.allow_dir).glob("*.key")))

    def apply(self, socket: zmq.Socket) -> None:
        """Make ``socket`` a CURVE server (before bind)."""
        socket.curve_secretkey = self.keys.secret
        socket.curve_publickey = self.keys.public
        socket.curve_server = True

    def stop(self) -> None:
        self.auth.stop()


def apply_curve_client(socket: zmq.Socket, keys: KeyPair, server_public: bytes) -> None:
    """Make ``socket`` a CURVE client of the server with public key ``server_public`` (before connect)."""
    socket.curve_secretkey = keys.secret
    socket.curve_publickey = keys.public
    socket.curve_serverkey = server_public
