"""Transport fixtures: fixed-chunk servers, each in its own OS process, on loopback with a free port."""

from __future__ import annotations

import pytest

from tests.transport.helpers import ServerProcess

# A small camera keeps these tests fast; the benchmarks use full-size images.
FIXED_ARGS = [
    "--bind", "tcp://127.0.0.1:*", "--cameras", "front:8x8", "--echo", "true", "--fail_task", "explode",
    "--trained_task", "push",
]


@pytest.fixture(scope="session")
def push_checkpoint(tmp_path_factory):
    """A tiny random lerobot DiffusionPolicy whose shapes fit ``push`` (delta actions), for a real
    ``policy-steer serve`` in the sim-robot tests."""
    from policy_steer import envs
    from tests.runtime.conftest import build_env_policy

    u = envs.make("push", "obstacle").unwrapped
    return build_env_policy(tmp_path_factory.mktemp("push_tiny"), u.state_dim, u.state_dim - u.robot_state_dim,
                            u.action_dim, u.max_step)


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
