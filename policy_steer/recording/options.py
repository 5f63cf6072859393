"""The recording options every process takes (``--record_bag``, ``--foxglove``, ``--foxglove_host``),
checked once, before anything connects or binds. No heavy imports: a config can be checked without rosbags."""

from __future__ import annotations

from pathlib import Path

from policy_steer.errors import ConfigError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def check_recording_options(record_bag: str | None, foxglove: int | None, foxglove_host: str, trusted_network: bool) -> None:
    """A bag folder that exists is refused (never overwritten); the live view's port must be a TCP port and
    its host loopback unless the network is trusted (the Foxglove protocol has no authentication)."""
    if record_bag is not None and Path(record_bag).exists():
        raise ConfigError(f"--record_bag {record_bag} exists already; refusing to overwrite it (choose a new folder)")
    if foxglove is not None and not 0 <= foxglove < 65536:
        raise ConfigError(f"--foxglove must be a TCP port (0-65535), got {foxglove}")
    if foxglove_host not in LOOPBACK and not trusted_network:
        raise ConfigError(f"--foxglove_host {foxglove_host} is beyond loopback and the Foxglove protocol has no "
                          "authentication: give --trusted_network true to allow it")
