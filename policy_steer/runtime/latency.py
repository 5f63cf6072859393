"""Inference delay in control steps: fixed, sampled, replayed, or measured online.

In simulation a latency model says how many control steps pass while a chunk is computed (the
virtual clock), so results do not depend on how fast this machine is. On a real robot the delay is
measured: a window of recent inference latencies, converted to control steps with a conservative
quantile.
"""

from __future__ import annotations

import json
import math
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from policy_steer.errors import ConfigError


class LatencyModel:
    name = "latency"

    def sample(self, rng: np.random.Generator) -> int:
        """Control steps the next inference takes."""
        raise NotImplementedError

    def estimate(self) -> int:
        """A conservative guess of the next delay (what the trigger and future-state horizon plan for)."""
        raise NotImplementedError


@dataclass
class FixedLatency(LatencyModel):
    steps: int
    name = "fixed"

    def sample(self, rng: np.random.Generator) -> int:
        return self.steps

    def estimate(self) -> int:
        return self.steps


@dataclass
class UniformLatency(LatencyModel):
    low: int
    high: int  # inclusive
    name = "uniform"

    def sample(self, rng: np.random.Generator) -> int:
        return int(rng.integers(self.low, self.high + 1))

    def estimate(self) -> int:
        return self.high


@dataclass
class ReplayLatency(LatencyModel):
    """Latencies measured on a real policy (milliseconds), replayed in order, as control steps."""

    latencies_ms: list[float]
    control_hz: float
    _i: int = 0
    name = "replay"

    def _steps(self, ms: float) -> int:
        return int(math.ceil(ms * 1e-3 * self.control_hz - 1e-9))

    def sample(self, rng: np.random.Generator) -> int:
        ms = self.latencies_ms[self._i % len(self.latencies_ms)]
        self._i += 1
        return self._steps(ms)

    def estimate(self) -> int:
        return self._steps(float(np.quantile(self.latencies_ms, 0.95)))


@dataclass
class MeasuredDelay:
    """Online estimate for wall-clock loops: the q-quantile of the last ``window`` latencies, in steps."""

    control_hz: float
    window: int = 20
    quantile: float = 0.9
    initial_steps: int = 1
    _latencies: deque = field(default_factory=deque)

    def record(self, latency_s: float) -> None:
        self._latencies.append(float(latency_s))
        while len(self._latencies) > self.window:
            self._latencies.popleft()

    def estimate(self) -> int:
        if not self._latencies:
            return self.initial_steps
        q = float(np.quantile(np.asarray(self._latencies), self.quantile))
        return int(math.ceil(q * self.control_hz - 1e-9))


def parse_latency(spec: str | int, control_hz: float = 10.0) -> LatencyModel:
    """``"4"`` fixed; ``"uniform:2-6"``; ``"replay:latencies.json"`` (a JSON list of milliseconds)."""
    s = str(spec).strip()
    try:
        if s.startswith("uniform:"):
            lo, hi = (int(v) for v in s.split(":", 1)[1].split("-"))
            if lo < 0 or hi < lo:
                raise ValueError("need 0 <= low <= high")
            return UniformLatency(lo, hi)
        if s.startswith("replay:"):
            path = Path(s.split(":", 1)[1])
            values = json.loads(path.read_text())
            if not values or not all(isinstance(v, (int, float)) and v >= 0 for v in values):
                raise ValueError(f"{path} must hold a non-empty JSON list of non-negative milliseconds")
            return ReplayLatency([float(v) for v in values], control_hz)
        steps = int(s)
        if steps < 0:
            raise ValueError("must be >= 0")
        return FixedLatency(steps)
    except (ValueError, OSError) as e:
        raise ConfigError(f"bad latency {spec!r} (use N, uniform:LO-HI or replay:FILE.json): {e}") from e
