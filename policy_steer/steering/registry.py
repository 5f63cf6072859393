"""Steering methods by name, for the CLI, the benchmark and the server.

A method registers a builder ``build(policy, settings) -> SteerSetup`` and the settings it reads
(``axes``): the benchmark makes one cell per combination of their values and records them in each
``runs`` entry. ``"none"`` is the unsteered policy. Names joined with ``+`` compose (``taco+vls``:
their strategies run together in the order given).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from policy_steer.errors import ConfigError
from policy_steer.policies.base import DenoisingPolicy
from policy_steer.sampler import SamplerConfig
from policy_steer.steering.base import Strategy


@dataclass
class SteerSetup:
    strategies: list[Strategy] = field(default_factory=list)
    sampler: SamplerConfig | None = None  # a method that needs, e.g., a stochastic sampler says so


@dataclass(frozen=True)
class SteerMethod:
    name: str
    axes: tuple[str, ...]  # settings that vary per benchmark cell (e.g. "candidates", "verifier")
    build: Callable[[DenoisingPolicy, dict[str, Any]], SteerSetup]
    options: tuple[str, ...] = ()  # the other settings it reads (a setting no method reads is refused)

    @property
    def settings(self) -> tuple[str, ...]:
        return self.axes + self.options


_METHODS: dict[str, SteerMethod] = {}
# Built-in methods live in their own modules and register on import.
_MODULES: dict[str, str] = {
    "taco": "policy_steer.steering.taco",
    "vls": "policy_steer.steering.vls",
    "rtc": "policy_steer.steering.inpainting",
    "rtc-cheap": "policy_steer.steering.inpainting",
    "warm": "policy_steer.steering.warm_start",
}


def register(method: SteerMethod) -> SteerMethod:
    _METHODS[method.name] = method
    return method


register(SteerMethod("none", (), lambda policy, settings: SteerSetup()))


def get_method(name: str) -> SteerMethod:
    if name not in _METHODS and name in _MODULES:
        try:
            importlib.import_module(_MODULES[name])
        except ModuleNotFoundError as e:
            raise ConfigError(f"steering method {name!r} is not available: {e}") from e
    if name not in _METHODS:
        raise ConfigError(f"unknown steering method {name!r}; use one of {sorted(set(_METHODS) | set(_MODULES))}")
    return _METHODS[name]


def methods_of(steer: str) -> list[SteerMethod]:
    """``"taco+vls"`` -> [taco, vls]; ``"none"`` -> [none]."""
    names = [n.strip() for n in steer.split("+") if n.strip()]
    if not names:
        raise ConfigError("empty steering method")
    return [get_method(n) for n in names]


def check_settings(steer: str, settings: dict[str, Any]) -> None:
    """Refuse a setting that no method of ``steer`` reads (a typo must not run the defaults in silence)."""
    known = {k for m in methods_of(steer) for k in m.settings}
    unknown = sorted(set(settings) - known - {"method"})
    if unknown:
        raise ConfigError(f"steering {steer!r} has no setting {', '.join(map(repr, unknown))}; "
                          f"its settings are {sorted(known) or 'none'}")


def build_steering(policy: DenoisingPolicy, steer: str, settings: dict[str, Any]) -> SteerSetup:
    """Strategies (and sampler needs) for ``steer`` with ``settings``."""
    setup = SteerSetup()
    for m in methods_of(steer):
        part = m.build(policy, settings)
        setup.strategies += part.strategies
        if part.sampler is not None:
            if setup.sampler is not None and setup.sampler != part.sampler:
                raise ConfigError(f"steering methods in {steer!r} need different samplers: {setup.sampler} vs {part.sampler}")
            setup.sampler = part.sampler
    return setup
