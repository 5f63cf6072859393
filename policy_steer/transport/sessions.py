"""Sessions: what the server remembers about each connected client between messages.

A ``hello`` opens a session and binds it to the peer that sent it (its ZeroMQ routing identity, and
with CURVE also its public key): session ids appear in telemetry, so another peer that knows one still
cannot use it. One peer holds at most one session (a re-``hello`` replaces it), the table holds at most
``max_sessions``, and a session expires after ``timeout_s`` without any message from its peer.

Episodes (protocol v2): a session has no episode until an ``episode`` message starts one (``explicit``)
or its first ``observe`` starts an implicit one with an empty context. ``episode`` counts the episodes
started in the session (1 for the first); ``context`` is the one the client sent that is in force
(the last accepted ``episode`` or ``context``; None in an implicit episode until a ``context``
arrives). The inference thread alone writes these fields.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field
from typing import Any

from policy_steer.transport.errors import BUSY, NO_SESSION, ProtocolError
from policy_steer.types import EpisodeContext


@dataclass(eq=False)
class Session:
    """One client's state. ``task``/``steer`` come from its ``configure`` messages."""

    id: str
    peer: bytes
    client: str
    control_hz: float
    opened: float
    last_seen: float
    task: str | None = None
    steer: dict[str, Any] = field(default_factory=dict)
    last_step: int | None = None  # the step of the session's last observe in this episode
    episode: int = 0  # episodes started in this session (0: none yet)
    explicit: bool = False  # the episode in force was started by an `episode` message
    context: EpisodeContext | None = None  # the episode context the client sent (None: none in force)
    policy_state: Any = None  # the policy's per-session state (export_session_state); None: none yet
    closed: bool = False
    chunks: int = 0
    executed: int = 0  # `executed` notifications accepted
    turn: tuple[int, int] = ()  # the job queue's round-robin rank: when it was last served (): never queued
    over_budget: str | None = None  # why its last chunk broke the chunk budget (its next observe is refused)


class SessionTable:
    """Thread-safe: the socket thread opens and looks up sessions, the inference thread reads them."""

    def __init__(self, timeout_s: float = 30.0, max_sessions: int = 64) -> None:
        self.timeout_s = timeout_s
        self.max_sessions = max_sessions
        self._by_id: dict[str, Session] = {}
        self._by_peer: dict[bytes, Session] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._by_id)

    def open(
        self, peer: bytes, client: str, control_hz: float, now: float, re: int | None = None
    ) -> tuple[Session, Session | None]:
        """A new session for ``peer``; returns it and the session it replaced (if any)."""
        with self._lock:
            old = self._by_peer.pop(peer, None)
            if old is not None:
                self._by_id.pop(old.id, None)
                old.closed = True
            if len(self._by_id) >= self.max_sessions:
                raise ProtocolError(
                    BUSY, f"the server holds its limit of {self.max_sessions} sessions; retry later", re
                )
            session = Session(
                id=secrets.token_hex(8), peer=peer, client=client, control_hz=control_hz, opened=now, last_seen=now
            )
            self._by_id[session.id] = session
            self._by_peer[peer] = session
            return session, old

    def get(self, session_id: str, peer: bytes, re: int | None = None) -> Session:
        """The session ``session_id`` if it exists and belongs to ``peer``; otherwise ``no_session``."""
        with self._lock:
            session = self._by_id.get(session_id)
        if session is None:
            raise ProtocolError(
                NO_SESSION, f"session {session_id[:32]!r} does not exist (expired or never opened); send hello", re
            )
        if session.peer != peer:
            raise ProtocolError(NO_SESSION, f"session {session_id[:32]!r} belongs to another client; send hello", re)
        return session

    def touch(self, peer: bytes, now: float) -> None:
        """Any message from a peer keeps its session alive (pings included)."""
        session = self._by_peer.get(peer)
        if session is not None:
            session.last_seen = now

    def expire(self, now: float) -> list[Session]:
        """Close and return the sessions idle for longer than ``timeout_s``."""
        with self._lock:
            gone = [s for s in self._by_id.values() if now - s.last_seen > self.timeout_s]
            for s in gone:
                del self._by_id[s.id]
                self._by_peer.pop(s.peer, None)
                s.closed = True
        return gone

    def close_all(self) -> None:
        with self._lock:
            for s in self._by_id.values():
                s.closed = True
            self._by_id.clear()
            self._by_peer.clear()
