"""Adapters that open lerobot policies' denoising loops (the ``DenoisingPolicy`` contract)."""

from policy_steer.policies.base import Context, DenoisingPolicy
from policy_steer.policies.loading import load_policy

__all__ = ["Context", "DenoisingPolicy", "load_policy"]
