"""The operator's limits on what a client can make the server spend (docs/protocol.md, "Limits of cost").

A client chooses costs through ``configure``'s ``steer`` map: how many chunks TACO samples and scores
(``candidates``), how many particles VLS guides (``particles``), how many denoising steps the sampler
runs (``num_steps``, for a policy that takes it), which folder a verifier is read from
(``verifier_path``) and which reward backend VLS calls (``reward_backend``). All sessions share one
model, so a cost one client chooses is a wait every other client pays. :class:`ServerLimits` bounds
each of them; the server checks a ``configure``'s values on receipt (:meth:`ServerLimits.check_steer`,
before anything is queued or built) and the settings the policy reports in force after it
(:meth:`ServerLimits.check_in_force`), and measures every chunk against ``max_chunk_s``.

Refusals: ``over_limit`` for a cost above its maximum (an infinite one included), ``bad_header`` for
a value that is not a count (a string, a bool, NaN, a fraction, below 1), ``steer_unavailable`` for a
``verifier_path`` that is not an existing folder under an allowed root, with **one text whatever the
reason** (so that a client learns nothing about which paths exist on the server), and for a reward
backend the operator did not allow. The maxima are announced in ``welcome`` (``limits``); the roots
are not (they are paths of the server's file system).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from policy_steer.errors import ConfigError
from policy_steer.transport.errors import BAD_HEADER, OVER_LIMIT, STEER_UNAVAILABLE, ProtocolError

# steer setting -> the ServerLimits field that bounds it
COUNT_SETTINGS = {"candidates": "max_candidates", "particles": "max_particles", "num_steps": "max_num_steps"}
VERIFIER_PATH = "verifier_path"
REWARD_BACKEND = "reward_backend"
DEFAULT_REWARD_BACKENDS = ("offline",)  # rules on this machine: no network, no extra model

# One text for every refused verifier_path: a path outside the roots, one that does not exist, one that
# leaves the roots through a link all read the same, so the answer reveals nothing about the server's files.
VERIFIER_PATH_REFUSED = (
    "configure refused: verifier_path is not a verifier folder this server may read; it reads verifiers only "
    "from existing folders under the roots its operator allowed (serve --verifier_roots)"
)


def _is_within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


@dataclass(frozen=True)
class ServerLimits:
    """Maxima set by the operator (``serve`` options of the same names).

    The defaults keep one chunk of the push policies on a 2-core CPU well inside a robot's default
    request timeout (1 s in the client library, 2 s in the robot host): 64 TACO candidates take about
    0.15 s, 32 VLS particles about 0.2 s.
    """

    max_candidates: int = 64  # TACO: chunks sampled and scored per observe
    max_particles: int = 32  # VLS: particles guided per observe
    max_num_steps: int = 100  # denoising steps, for a policy whose steering settings take `num_steps`
    max_chunk_s: float = 1.0  # seconds one chunk may take to compute (see docs/protocol.md for what happens above)
    verifier_roots: tuple[str, ...] = ()  # folders under which a client's verifier_path may point (none: no path)
    reward_backends: tuple[str, ...] = DEFAULT_REWARD_BACKENDS  # VLS reward backends a client may choose
    _real_roots: tuple[str, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in COUNT_SETTINGS.values():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"--{name} must be an integer >= 1, got {value!r}")
        if not (isinstance(self.max_chunk_s, (int, float)) and math.isfinite(self.max_chunk_s) and self.max_chunk_s > 0):
            raise ConfigError(f"--max_chunk_s must be a positive number of seconds, got {self.max_chunk_s!r}")
        roots = tuple(str(r) for r in self.verifier_roots if str(r))
        object.__setattr__(self, "verifier_roots", roots)
        object.__setattr__(self, "_real_roots", tuple(os.path.realpath(r) for r in roots))
        object.__setattr__(self, "reward_backends", tuple(str(b) for b in self.reward_backends))

    def maxima(self) -> dict[str, int]:
        return {key: int(getattr(self, name)) for key, name in COUNT_SETTINGS.items()}

    def to_wire(self) -> dict[str, Any]:
        """What ``welcome`` announces (``limits``): every maximum, the chunk budget, the allowed backends."""
        return {**self.maxima(), "chunk_s": float(self.max_chunk_s), "reward_backends": list(self.reward_backends)}

    # --- checks -----------------------------------------------------------------------------------
    def check_steer(self, steer: Mapping[str, Any] | None, re: int | None) -> None:
        """The values a client asks for in ``configure`` (nil values return to defaults: not checked)."""
        if not steer:
            return
        for key, value in steer.items():
            if value is None:
                continue
            if key in COUNT_SETTINGS:
                self._check_count(key, value, re)
            elif key == VERIFIER_PATH:
                self.check_verifier_path(value, re)
            elif key == REWARD_BACKEND and str(value) not in self.reward_backends:
                raise ProtocolError(
                    STEER_UNAVAILABLE,
                    f"configure refused: reward_backend {str(value)[:64]!r} is not allowed on this server "
                    f"(allowed: {', '.join(self.reward_backends) or 'none'})",
                    re,
                )

    def check_in_force(self, in_force: Mapping[str, Any], batch: Any, re: int | None) -> None:
        """The settings the policy reports in force after ``configure`` (the operator's defaults merged
        in) and the number of chunks it will sample per observe (``batch``: the policy's ``candidates``,
        None when it does not say)."""
        for key in COUNT_SETTINGS:
            value = in_force.get(key)
            if value is not None:
                self._check_count(key, value, re)
        if isinstance(batch, int) and not isinstance(batch, bool):
            most = max(self.max_candidates, self.max_particles)
            if batch > most:
                raise ProtocolError(
                    OVER_LIMIT,
                    f"configure refused: these settings sample {batch} chunks per observe; this server's limit is "
                    f"{most} (max_candidates {self.max_candidates}, max_particles {self.max_particles})",
                    re,
                )

    def _check_count(self, key: str, value: Any, re: int | None) -> int:
        limit = getattr(self, COUNT_SETTINGS[key])
        n: int | None = None
        if isinstance(value, bool):
            n = None
        elif isinstance(value, int):
            n = value
        elif isinstance(value, float):
            if math.isinf(value) and value > 0:
                raise ProtocolError(
                    OVER_LIMIT, f"configure refused: {key} is infinite; this server's limit is {limit}", re
                )
            if math.isfinite(value) and value.is_integer():
                n = int(value)
        elif isinstance(value, str) and value.strip().lstrip("+-").isdigit() and len(value) <= 32:
            n = int(value)
        if n is None:
            raise ProtocolError(
                BAD_HEADER, f"configure: {key} must be an integer between 1 and {limit}, got {str(value)[:64]!r}", re
            )
        if n < 1:
            raise ProtocolError(BAD_HEADER, f"configure: {key} must be at least 1, got {n}", re)
        if n > limit:
            raise ProtocolError(
                OVER_LIMIT,
                f"configure refused: {key} {n} is above this server's limit of {limit} (welcome.limits.{key})",
                re,
            )
        return n

    def check_verifier_path(self, path: Any, re: int | None) -> str:
        """``path`` when it is an existing folder under an allowed root (links resolved); otherwise the one
        ``steer_unavailable`` text. Outside the roots nothing is looked up on the file system."""
        refused = ProtocolError(STEER_UNAVAILABLE, VERIFIER_PATH_REFUSED, re)
        if not isinstance(path, str) or not path or len(path) > 4096 or "\0" in path:
            raise refused
        lexical = os.path.abspath(path)
        if not any(_is_within(lexical, os.path.abspath(r)) or _is_within(lexical, real)
                   for r, real in zip(self.verifier_roots, self._real_roots)):
            raise refused
        try:
            real = os.path.realpath(path)
            inside = any(_is_within(real, root) for root in self._real_roots)
            if not inside or not os.path.isdir(real):
                raise refused
        except (OSError, ValueError):
            raise refused from None
        return real


def limits_from_options(
    max_candidates: int,
    max_particles: int,
    max_num_steps: int,
    max_chunk_s: float,
    verifier_roots: Iterable[str],
    reward_backends: Iterable[str],
    default_steer: Mapping[str, Any] | None = None,
) -> ServerLimits:
    """The limits of ``serve``-style options; the operator's own default settings must respect them
    (ConfigError otherwise: a server whose defaults break its limits would refuse nothing it runs itself)."""
    default_steer = dict(default_steer or {})
    backends = tuple(dict.fromkeys([*reward_backends, *([str(default_steer[REWARD_BACKEND])] if default_steer.get(REWARD_BACKEND) else [])]))
    limits = ServerLimits(
        max_candidates=int(max_candidates),
        max_particles=int(max_particles),
        max_num_steps=int(max_num_steps),
        max_chunk_s=float(max_chunk_s),
        verifier_roots=tuple(verifier_roots),
        reward_backends=backends,
    )
    try:
        limits.check_in_force(default_steer, None, None)
    except ProtocolError as e:
        raise ConfigError(f"--steer_settings break the server's own limits: {e.message}") from None
    return limits
