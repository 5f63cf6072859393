"""Shared fixtures. Everything runs offline: no hub access in any test."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MUJOCO_GL", "egl")

import pytest  # noqa: E402

from tests.fixtures.tiny_policies import build_tiny_diffusion  # noqa: E402


@pytest.fixture(scope="session")
def tiny_diffusion_dir(tmp_path_factory):
    """A tiny DiffusionPolicy checkpoint folder (DDIM, 10 steps, state 10 + env 6 -> action 3)."""
    return build_tiny_diffusion(tmp_path_factory.mktemp("tiny_diffusion"))
