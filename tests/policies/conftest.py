"""Tiny flow-matching checkpoints, built once per test session (offline; see flow_checkpoints.py)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402

from tests.policies.flow_checkpoints import build_tiny_dit, build_tiny_pi, build_tiny_smolvla  # noqa: E402

BUILDERS = {
    "pi0": lambda f: build_tiny_pi(f, "pi0"),
    "pi05": lambda f: build_tiny_pi(f, "pi05"),
    "smolvla": build_tiny_smolvla,
    "dit-flow": lambda f: build_tiny_dit(f),
    "dit-flow-camera": lambda f: build_tiny_dit(f, camera=True),
    "dit-ddpm": lambda f: build_tiny_dit(f, objective="diffusion", noise_scheduler_type="DDPM"),
    "dit-ddim": lambda f: build_tiny_dit(f, objective="diffusion", noise_scheduler_type="DDIM"),
    # the image-diffusion family's layout: diffusion objective, a camera, centre crop at inference
    "dit-ddim-camera": lambda f: build_tiny_dit(f, objective="diffusion", noise_scheduler_type="DDIM", camera=True, crop=24),
}


@pytest.fixture(scope="session")
def flow_checkpoint(tmp_path_factory):
    """``flow_checkpoint(kind) -> folder``: a self-contained tiny checkpoint of that kind, built once."""
    built: dict[str, object] = {}

    def get(kind: str):
        if kind not in built:
            built[kind] = BUILDERS[kind](tmp_path_factory.mktemp(kind) / "ckpt")
        return built[kind]

    return get
