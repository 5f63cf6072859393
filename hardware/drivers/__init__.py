"""Arm drivers by name: ``virtual`` (the MuJoCo virtual arm) and ``lerobot:<type>`` (any lerobot robot).

``make_arm("lerobot:so101_follower", ["port=/dev/ttyACM0", "id=arm1"])`` builds the driver (not yet
connected); a missing SDK or a bad argument raises :class:`~policy_steer.hardware.errors.DriverUnavailable`
with one line. Driver modules are imported only when named, so naming ``virtual`` never imports
lerobot and naming a lerobot robot never imports MuJoCo unless the robot does.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

from policy_steer.hardware.arm import Arm
from policy_steer.hardware.errors import DriverUnavailable

VIRTUAL = "virtual"
LEROBOT = "lerobot:"
VIRTUAL_LEROBOT = "lerobot:policy_steer_virtual_follower"  # the lerobot robot backed by the virtual arm (--virtual_arm)


def parse_driver_args(items: list[str]) -> dict[str, str]:
    """``["port=/dev/ttyACM0", "id=a"]`` -> ``{"port": "/dev/ttyACM0", "id": "a"}``."""
    out: dict[str, str] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise DriverUnavailable(f"driver argument {item!r} is not key=value (e.g. --driver_arg port=/dev/ttyACM0)")
        out[key.strip()] = value.strip()
    return out


def make_arm(driver: str, args: list[str] | dict[str, str] | None = None, **arm_options: Any) -> Arm:
    """The driver named ``driver`` with its arguments. ``arm_options`` go to the lerobot adapter
    (``control_hz``, ``max_joint_velocity``, ``limits_spec``, ``stop_torque_off``)."""
    kv = args if isinstance(args, dict) else parse_driver_args(list(args or []))
    if driver == VIRTUAL:
        import draccus

        from policy_steer.hardware.drivers.virtual import VirtualArm, VirtualArmConfig

        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                cfg = draccus.parse(VirtualArmConfig, args=[f"--{k}={v}" for k, v in kv.items()])
        except SystemExit:
            lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
            why = lines[-1].split("error:", 1)[-1].strip() if lines else "invalid arguments"
            raise DriverUnavailable(f"virtual: bad driver arguments ({why})") from None
        except Exception as e:  # noqa: BLE001 - the config's own checks
            raise DriverUnavailable(f"virtual: bad driver arguments: {str(e).splitlines()[0]}") from None
        if "control_hz" in arm_options and arm_options["control_hz"]:
            cfg.control_hz = float(arm_options["control_hz"])
        return VirtualArm(cfg)
    if driver.startswith(LEROBOT) and len(driver) > len(LEROBOT):
        from policy_steer.hardware.drivers.lerobot_arm import make_lerobot_arm

        return make_lerobot_arm(driver[len(LEROBOT):], kv, **{k: v for k, v in arm_options.items() if v is not None})
    raise DriverUnavailable(f"unknown driver {driver!r}; use 'virtual' or 'lerobot:<robot type>' (e.g. lerobot:so101_follower)")
