"""Errors of the wire protocol (server side) and of requests (client side).

``ProtocolError`` is what the server answers with an ``error`` message: its ``code`` is one of
``docs/protocol.md``'s codes and its message says what was wrong and where. The client raises the
``TransportError`` family; ``RemoteError`` carries the server's code.
"""

from __future__ import annotations

from policy_steer.errors import (
    CONTEXT_MISMATCH,
    CONTEXT_REQUIRED,
    REFUSAL_CODES,
    STEER_UNAVAILABLE,
    STEER_UNSUPPORTED,
    PolicySteerError,
)

# docs/protocol.md, "error": the only codes a server sends.
BAD_HEADER = "bad_header"
VERSION = "version"
UNKNOWN_TYPE = "unknown_type"
BAD_ARRAY = "bad_array"
TOO_LARGE = "too_large"
NO_SESSION = "no_session"
BUSY = "busy"
INTERNAL = "internal"
# v2: the episode context and steering refusals.
BAD_CONTEXT = "bad_context"  # a context that fails its schema (or holds a non-finite number)
NO_EPISODE = "no_episode"  # a `context` update in a session where no episode has started
# A cost above the operator's limit (candidates, particles, denoising steps, the chunk budget in seconds).
OVER_LIMIT = "over_limit"
# CONTEXT_REQUIRED, STEER_UNAVAILABLE, STEER_UNSUPPORTED, CONTEXT_MISMATCH: SteeringRefused.code, as is
ERROR_CODES = (
    BAD_HEADER,
    VERSION,
    UNKNOWN_TYPE,
    BAD_ARRAY,
    TOO_LARGE,
    NO_SESSION,
    BUSY,
    INTERNAL,
    BAD_CONTEXT,
    NO_EPISODE,
    OVER_LIMIT,
    *REFUSAL_CODES,
)
__all__ = [
    "BAD_ARRAY", "BAD_CONTEXT", "BAD_HEADER", "BUSY", "CONTEXT_MISMATCH", "CONTEXT_REQUIRED", "ERROR_CODES",
    "INTERNAL", "NO_EPISODE", "NO_SESSION", "OVER_LIMIT", "REFUSAL_CODES", "STEER_UNAVAILABLE", "STEER_UNSUPPORTED",
    "TOO_LARGE", "UNKNOWN_TYPE", "VERSION", "BusyError", "ClientClosed", "ProtocolError", "RemoteError",
    "RequestTimeout", "SpecChanged", "TransportError",
]


class ProtocolError(Exception):
    """A message that breaks the protocol, or a request the server refuses. ``re`` is the request's
    ``seq`` when it could be read."""

    def __init__(self, code: str, message: str, re: int | None = None, peer_version: int | None = None) -> None:
        assert code in ERROR_CODES, code
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.re = re
        self.peer_version = peer_version  # a `version` error: the version the peer spoke


class TransportError(PolicySteerError):
    """A request that did not produce a valid answer (timeout, server error, broken link)."""


class RequestTimeout(TransportError):
    """No answer before the request's deadline. The request is abandoned; a late answer is dropped."""


class RemoteError(TransportError):
    """The server answered ``error``; ``code`` is its docs/protocol.md code.

    ``refused`` is True for the steering refusals (``context_required``, ``steer_unavailable``,
    ``steer_unsupported``, ``context_mismatch``): the request was well formed, but a strategy in force
    cannot act with it.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"server error {code}: {message}")
        self.code = code
        self.message = message

    @property
    def refused(self) -> bool:
        return self.code in REFUSAL_CODES


class BusyError(RemoteError):
    """The server dropped this observe because a newer one of the same session arrived (code ``busy``)."""


class SpecChanged(TransportError):
    """After a reconnect the server welcomed us with a different spec (another policy): requests stop."""


class ClientClosed(TransportError):
    """The client was closed while the request was pending, or a request was made after ``close()``."""
