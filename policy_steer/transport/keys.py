"""CURVE keys: generate them (``policy-steer keys --out DIR``) and load them.

A key folder made by :func:`generate_keys` holds::

    DIR/server.key            server public key (give it to every client)
    DIR/server.key_secret     server secret key (stays on the policy server)
    DIR/<client>.key          a client's public key
    DIR/<client>.key_secret   that client's secret key (stays on the robot's computer)
    DIR/authorized_clients/<client>.key   the server's allow-list: public keys only

The files are ZeroMQ's certificate format (``zmq.auth``). To admit another robot, run
``policy-steer keys --out DIR --clients robot2 --server false`` and restart the server; to revoke
one, delete its file from ``authorized_clients/``. Copy to the robot only ``server.key`` and the
robot's own ``<client>.key_secret``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth

from policy_steer.errors import ConfigError

SERVER = "server"
ALLOW_DIR = "authorized_clients"


@dataclass(frozen=True)
class KeyPair:
    public: bytes  # z85, 40 characters
    secret: bytes | None


def generate_keys(
    out: str | Path, clients: list[str] | tuple[str, ...] = ("client",), server: bool = True, force: bool = False
) -> list[Path]:
    """Write a server key pair (if ``server``) and one key pair per client; add clients to the allow-list."""
    if not zmq.has("curve"):
        raise ConfigError("this libzmq was built without CURVE support")
    out = Path(out)
    (out / ALLOW_DIR).mkdir(parents=True, exist_ok=True)
    names = ([SERVER] if server else []) + list(clients)
    if len(set(names)) != len(names):
        raise ConfigError(f"key names must be distinct: {names}")
    written: list[Path] = []
    for name in names:
        if not name or "/" in name or name.startswith("."):
            raise ConfigError(f"bad key name {name!r}")
        secret_file = out / f"{name}.key_secret"
        if secret_file.exists() and not force:
            raise ConfigError(f"{secret_file} exists; pass --force true to overwrite it")
        public_file, secret_file_s = zmq.auth.create_certificates(out, name)
        os.chmod(secret_file_s, 0o600)  # secret keys readable by their owner only
        written += [Path(public_file), Path(secret_file_s)]
        if name != SERVER:
            allowed = out / ALLOW_DIR / f"{name}.key"
            allowed.write_bytes(Path(public_file).read_bytes())
            written.append(allowed)
    return written


def load_keypair(path: str | Path, need_secret: bool = True) -> KeyPair:
    """A key file (``.key`` or ``.key_secret``) -> KeyPair; a clear error if missing or not a key."""
    path = Path(path)
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read CURVE key {path}: {e}") from e
    if need_secret and not secret:
        raise ConfigError(f"{path} holds no secret key (use the .key_secret file)")
    return KeyPair(public=public, secret=secret)


def server_keys(folder: str | Path) -> tuple[KeyPair, Path]:
    """The server's key pair and its allow-list folder, from a folder made by :func:`generate_keys`."""
    folder = Path(folder)
    allow = folder / ALLOW_DIR
    if not allow.is_dir() or not any(allow.glob("*.key")):
        raise ConfigError(f"{allow} holds no client public keys: no client could connect")
    return load_keypair(folder / f"{SERVER}.key_secret"), allow


def client_keys(folder: str | Path, name: str = "client") -> tuple[KeyPair, bytes]:
    """A client's key pair and the server's public key, from a folder made by :func:`generate_keys`."""
    folder = Path(folder)
    return load_keypair(folder / f"{name}.key_secret"), load_keypair(folder / f"{SERVER}.key", need_secret=False).public
