"""Fixtures shared by every test suite. Keep this file small: builders live in tests/fixtures/."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `import tests.fixtures...`


@pytest.fixture(scope="session")
def tiny_diffusion_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny real lerobot DiffusionPolicy checkpoint (state 10 + environment state 6 -> action 3)."""
    from tests.fixtures.tiny_policies import build_tiny_diffusion

    return build_tiny_diffusion(tmp_path_factory.mktemp("tiny_diffusion"))


@pytest.fixture(scope="session")
def tiny_diffusion_dir(tiny_diffusion_checkpoint: Path) -> Path:
    """The same tiny checkpoint under the name the policy and steering tests use."""
    return tiny_diffusion_checkpoint
