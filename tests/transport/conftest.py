"""Transport fixtures: fixed-chunk servers, each in its own OS process, on loopback with a free port."""

from __future__ import annotations

import pytest

from tests.transport.helpers import ServerProcess

# A small camera keeps these tests fast; the benchmarks use full-size images.
FIXED_ARGS = [
    "--bind", "tcp://127.0.0.1:*", "--cameras", "front:8x8", "--echo", "true", "--fail_task", "explode",
    "--trained_task", "push",
]


@pytest.fixture(scope="module")
def fixed_server():
    server = ServerProcess(FIXED_ARGS)
    yield server
    server.kill()


@pytest.fixture(scope="module")
def slow_server():
    """Each chunk takes 0.5 s."""
    server = ServerProcess(FIXED_ARGS + ["--delay_s", "0.5"])
    yield server
    server.kill()


@pytest.fixture(scope="module")
def slower_server():
    """Each chunk takes 2 s: wide enough a window for tests that must send while one chunk is computed,
    however late this loaded machine schedules the sender."""
    server = ServerProcess(FIXED_ARGS + ["--delay_s", "2.0"])
    yield server
    server.kill()
