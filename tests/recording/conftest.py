"""Fixtures of the recording tests: the hardware tests' policy server process (tests/hardware/conftest.py)."""

from tests.hardware.conftest import policy_server  # noqa: F401 - a fixture, used by name
