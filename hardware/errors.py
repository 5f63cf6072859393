"""Errors of the robot side. Each message is one line that says what to do."""

from __future__ import annotations

from policy_steer.errors import PolicySteerError


class DriverUnavailable(PolicySteerError):
    """A driver's dependency (an SDK) or its device (a serial port, a camera) is missing or refuses us."""


class SafetyError(PolicySteerError):
    """The safety layer refuses to run: no limits, an action space that does not fit the arm, ..."""


class ArmStopped(PolicySteerError):
    """A command reached an arm after its safe stop (the safety layer never sends one; a bug if seen)."""
