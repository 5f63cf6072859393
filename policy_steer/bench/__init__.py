"""Seeded benchmark runs: cells of (task, variant, policy, steering, mode, latency) x episodes."""
