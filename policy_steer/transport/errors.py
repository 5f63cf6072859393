"""Errors of the wire protocol (server side) and of requests (client side).

``ProtocolError`` is what the server answers with an ``error`` message: its ``code`` is one of
PROTOCOL.md's codes and its message says what was wrong and where. The client raises the
``TransportError`` family; ``RemoteError`` carries the server's code.
"""

from __future__ import annotations

from policy_steer.errors import PolicySteerError

# PROTOCOL.md, "error": the only codes a server sends.
BAD_HEADER = "bad_header"
VERSION = "version"
UNKNOWN_TYPE = "unknown_type"
BAD_ARRAY = "bad_array"
TOO_LARGE = "too_large"
NO_SESSION = "no_session"
BUSY = "busy"
INTERNAL = "internal"
ERROR_CODES = (BAD_HEADER, VERSION, UNKNOWN_TYPE, BAD_ARRAY, TOO_LARGE, NO_SESSION, BUSY, INTERNAL)


class ProtocolError(Exception):
    """A message that breaks PROTOCOL.md. ``re`` is the request's ``seq`` when it could be read."""

    def __init__(self, code: str, message: str, re: int | None = None) -> None:
        assert code in ERROR_CODES, code
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.re = re


class TransportError(PolicySteerError):
    """A request that did not produce a valid answer (timeout, server error, broken link)."""


class RequestTimeout(TransportError):
    """No answer before the request's deadline. The request is abandoned; a late answer is dropped."""


class RemoteError(TransportError):
    """The server answered ``error``; ``code`` is its PROTOCOL.md code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"server error {code}: {message}")
        self.code = code
        self.message = message


class BusyError(RemoteError):
    """The server dropped this observe because a newer one of the same session arrived (code ``busy``)."""


class SpecChanged(TransportError):
    """After a reconnect the server welcomed us with a different spec (another policy): requests stop."""


class ClientClosed(TransportError):
    """The client was closed while the request was pending, or a request was made after ``close()``."""
