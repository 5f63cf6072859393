"""Steering strategies: hooks on the sampler (guidance, resampling, selection, warm start)."""

from policy_steer.steering.base import Strategy

__all__ = ["Strategy"]
