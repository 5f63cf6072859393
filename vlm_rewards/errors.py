"""Errors of reward programs and their synthesis; each names the place it is about.

All are :class:`policy_steer.errors.ValidationError` (or another :class:`PolicySteerError`), so the CLI
prints them as one line.
"""

from __future__ import annotations

from policy_steer.errors import PolicySteerError, ValidationError


class ProgramError(ValidationError):
    """A reward program that is not valid: wrong structure, unknown term, bad argument, unknown name.

    ``problems`` lists every ``(path, message)`` found, e.g.
    ``("stages[1].terms[0].args.point", "'cube_top' is not in the scene (have: ...)")``; the exception
    message joins them as ``path: message`` lines.
    """

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(f"{p}: {m}" if p else m for p, m in self.problems))

    @classmethod
    def at(cls, path: str, message: str) -> "ProgramError":
        return cls([(path, message)])


class ProgramParseError(ProgramError):
    """A model answer that is not JSON (or holds no JSON object)."""


class SynthesisFailed(PolicySteerError):
    """A backend could not produce a valid program (after its re-ask); the episode runs unsteered.

    ``reasons`` holds one line per failed attempt (a parse or validation error, a timeout, an HTTP error).
    """

    def __init__(self, backend: str, reasons: list[str]) -> None:
        self.backend = backend
        self.reasons = list(reasons)
        super().__init__(f"{backend} synthesis failed after {len(reasons)} attempt(s): " + " | ".join(reasons))
