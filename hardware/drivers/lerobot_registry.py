"""Find a lerobot robot type and build its config from ``key=value`` driver arguments.

lerobot registers a robot's config class (``RobotConfig.register_subclass("so101_follower")``) when the
module defining it is imported. :func:`robot_config_class` imports this project's own lerobot robot
(:mod:`~policy_steer.hardware.drivers.virtual_follower`), then lerobot's robot packages one by one until
the type is known, then third-party ``lerobot_robot_*`` plugins. :func:`parse_robot_config` fills the
config with draccus from ``--driver_arg port=/dev/ttyACM0 --driver_arg id=my_arm``, as lerobot's own
``--robot.port=...`` flags would.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import pkgutil
from typing import Any

import draccus

from policy_steer.hardware.errors import DriverUnavailable


def robot_config_class(type_name: str) -> type:
    """The ``RobotConfig`` subclass registered as ``type_name``; DriverUnavailable (one line) if none."""
    from lerobot.robots import RobotConfig

    importlib.import_module("policy_steer.hardware.drivers.virtual_follower")
    if type_name in RobotConfig.get_known_choices():
        return RobotConfig.get_choice_class(type_name)
    import lerobot.robots as pkg

    failures: dict[str, str] = {}
    for mod in pkgutil.iter_modules(pkg.__path__):
        if not mod.ispkg:
            continue
        try:
            importlib.import_module(f"{pkg.__name__}.{mod.name}")
        except Exception as e:  # noqa: BLE001 - a robot whose SDK is missing must not hide the others
            failures[mod.name] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            continue
        if type_name in RobotConfig.get_known_choices():
            return RobotConfig.get_choice_class(type_name)
    with contextlib.suppress(Exception):
        from lerobot.utils.import_utils import register_third_party_plugins

        register_third_party_plugins()
    if type_name in RobotConfig.get_known_choices():
        return RobotConfig.get_choice_class(type_name)
    stem = type_name.split("_")[0]
    related = {k: v for k, v in failures.items() if k.startswith(stem) or stem.startswith(k.split("_")[0])}
    if related:
        pkg_name, err = next(iter(related.items()))
        raise DriverUnavailable(f"lerobot robot type {type_name!r} could not be loaded (lerobot.robots.{pkg_name}: {err})")
    known = sorted(RobotConfig.get_known_choices())
    raise DriverUnavailable(f"unknown lerobot robot type {type_name!r}; known types: {', '.join(known)}")


def parse_robot_config(type_name: str, args: dict[str, str]) -> Any:
    """An instance of the type's config class from ``key=value`` pairs (values parsed as lerobot's CLI does)."""
    cls = robot_config_class(type_name)
    argv = [f"--{k}={v}" for k, v in args.items()]
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return draccus.parse(cls, args=argv)
    except SystemExit:
        lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
        why = lines[-1].split("error:", 1)[-1].strip() if lines else "invalid arguments"
        raise DriverUnavailable(
            f"lerobot:{type_name}: bad driver arguments ({why}); pass them as --driver_arg key=value"
        ) from None
    except Exception as e:  # noqa: BLE001 - draccus decoding errors, the config's own __post_init__ checks
        raise DriverUnavailable(f"lerobot:{type_name}: bad driver arguments: {str(e).splitlines()[0]}") from None
