"""Where serialised messages go: a rosbag2 folder (MCAP storage) or a live Foxglove WebSocket server.

A sink takes ``write(topic, typename, stamp_ns, cdr_bytes)`` in stamp order and ``close(custom)``
at the end of an episode; it is only ever called from the recorder's writer thread, never from the
control loop. A sink that raises OSError (a full disk, a file-size limit, a vanished device) is
dropped by the recorder, which says so once (:mod:`policy_steer.recording.recorder`).

:class:`BagSink`: ``rosbags``' rosbag2 writer with ``StoragePlugin.MCAP``, format version 9: the folder
holds ``<name>_0.mcap`` and a ``metadata.yaml`` that ``ros2 bag info`` reads. An existing folder is
refused (:class:`~policy_steer.errors.ConfigError`, one line): a recording never overwrites another.
``custom`` (the episode's outcome) lands in the metadata's ``custom_data``.

:class:`LiveView`: a ``foxglove-sdk`` WebSocket server (subprotocol ``foxglove.sdk.v1``) with its own
SDK context (so nothing else logged in the process leaks onto it), bound to loopback unless told
otherwise, one channel per topic with the ``ros2msg`` schema and ``cdr`` encoding, the same bytes as the
bag. It lives for the whole process (episodes come and go); ``close`` of an episode leaves it up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from policy_steer.errors import ConfigError
from policy_steer.recording.messages import TYPESTORE, msgdef


class Sink(Protocol):
    name: str

    def write(self, topic: str, typename: str, stamp_ns: int, data: bytes) -> None: ...

    def close(self, custom: dict[str, str]) -> None: ...


def refuse_existing(path: str | Path) -> Path:
    """``path`` for a new bag folder; ConfigError when something is already there (no overwrite)."""
    path = Path(path)
    if path.exists():
        raise ConfigError(f"bag folder {path} exists already; refusing to overwrite it (choose a new --record_bag folder)")
    return path


class BagSink:
    """A rosbag2 folder with MCAP storage (module docstring)."""

    def __init__(self, path: str | Path) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        self.path = refuse_existing(path)
        if not self.path.parent.is_dir():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.name = f"bag {self.path}"
        self._writer = Writer(self.path, version=9, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        self._conns: dict[str, object] = {}
        self._closed = False

    def write(self, topic: str, typename: str, stamp_ns: int, data: bytes) -> None:
        conn = self._conns.get(topic)
        if conn is None:
            conn = self._conns[topic] = self._writer.add_connection(topic, typename, typestore=TYPESTORE)
        self._writer.write(conn, stamp_ns, data)

    def close(self, custom: dict[str, str]) -> None:
        if self._closed:
            return
        self._closed = True
        for k, v in custom.items():
            self._writer.set_custom_data(k, v)
        self._writer.close()


class LiveView:
    """A Foxglove WebSocket server for the recorder's channels (module docstring). ``port`` 0 picks a
    free one (``self.port`` says which)."""

    def __init__(self, port: int = 8765, host: str = "127.0.0.1", name: str = "policy-steer") -> None:
        import foxglove

        self._fg = foxglove
        self.context = foxglove.Context()
        try:
            self.server = foxglove.start_server(name=name, host=host, port=port, context=self.context)
        except Exception as e:  # noqa: BLE001 - the SDK's own error types; one line naming the address
            raise ConfigError(f"--foxglove: cannot serve the live view on {host}:{port}: {e}") from None
        self.port = int(self.server.port)
        self.host = host
        self.name = f"foxglove ws://{host}:{self.port}"
        self._channels: dict[str, object] = {}

    def advertise(self, cameras: tuple[str, ...] = ()) -> None:
        """Open every channel now (the standard topics and these cameras' images), so a viewer that
        connects before the first episode sees and can subscribe to all of them."""
        from policy_steer.recording.messages import IMAGE_TYPE, TOPICS, camera_topic

        for topic, typename in TOPICS.items():
            self.channel(topic, typename)
        for cam in cameras:
            self.channel(camera_topic(cam), IMAGE_TYPE)

    def channel(self, topic: str, typename: str):
        ch = self._channels.get(topic)
        if ch is None:
            schema = self._fg.Schema(name=typename, encoding="ros2msg", data=msgdef(typename).encode())
            ch = self._channels[topic] = self._fg.Channel(topic, schema=schema, message_encoding="cdr", context=self.context)
        return ch

    def write(self, topic: str, typename: str, stamp_ns: int, data: bytes) -> None:
        self.channel(topic, typename).log(data, log_time=stamp_ns)

    def close(self, custom: dict[str, str]) -> None:
        pass  # an episode ended; the server stays up for the next one (``stop`` ends it)

    def stop(self) -> None:
        self.server.stop()
