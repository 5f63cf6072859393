"""``VirtualFollower``: a real lerobot ``Robot`` subclass with simulated motors (the MuJoCo virtual arm).

The motors are STS3215-like position servos described with lerobot's own ``Motor`` and
``MotorCalibration`` records on a :class:`SimulatedMotorBus`: 4096 ticks per turn, tick 2048 at the
simulation's zero angle, a calibrated range equal to the joint's range in the model. Positions are
normalised exactly as lerobot's ``MotorsBus`` does (``degrees``: ``(ticks - mid) * 360 / 4095``;
``range_m100_100``; ``range_0_100`` for the gripper), so the features, units and calibrated limits a
policy and the safety layer see are those of an SO-101 follower. ``send_action`` applies lerobot's
``max_relative_target`` cap like the SO followers do.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np
from lerobot.motors import Motor, MotorCalibration, MotorNormMode
from lerobot.robots import Robot
from lerobot.robots.utils import ensure_safe_goal_position

from policy_steer.envs.arm import ARM_JOINTS, JOINT_RANGE
from policy_steer.hardware.arm import JointCommand
from policy_steer.hardware.drivers.virtual import VirtualArm, VirtualArmConfig
from policy_steer.hardware.drivers.virtual_follower.config_virtual_follower import VirtualFollowerConfig

MODEL = "sts3215"
RESOLUTION = 4096
_TICKS_PER_RAD = RESOLUTION / (2 * np.pi)


class SimulatedMotorBus:
    """The motors of the virtual arm in lerobot's terms (``motors``, ``calibration``, ``model_resolution_table``)."""

    model_resolution_table = {MODEL: RESOLUTION}

    def __init__(self, motor_names: list[str], use_degrees: bool) -> None:
        body = MotorNormMode.DEGREES if use_degrees else MotorNormMode.RANGE_M100_100
        self.motors: dict[str, Motor] = {n: Motor(i + 1, MODEL, body) for i, n in enumerate(motor_names)}
        self.motors["gripper"] = Motor(len(motor_names) + 1, MODEL, MotorNormMode.RANGE_0_100)
        self.calibration: dict[str, MotorCalibration] = {}
        for (name, m), joint in zip(self.motors.items(), [*ARM_JOINTS, "gripper"]):
            lo, hi = JOINT_RANGE[joint] if joint != "gripper" else (0.0, 1.0)
            if joint == "gripper":  # the gripper's ticks span its opening 0..1 over a quarter turn
                rmin, rmax = 2048, 2048 + RESOLUTION // 4
            else:
                rmin, rmax = round(2048 + lo * _TICKS_PER_RAD), round(2048 + hi * _TICKS_PER_RAD)
            self.calibration[name] = MotorCalibration(id=m.id, drive_mode=0, homing_offset=0, range_min=rmin, range_max=rmax)
        self.is_connected = False

    # radians (and gripper opening) <-> ticks <-> lerobot's normalised units
    def _ticks(self, name: str, value: float) -> float:
        if name == "gripper":
            c = self.calibration[name]
            return c.range_min + value * (c.range_max - c.range_min)
        return 2048 + value * _TICKS_PER_RAD

    def _from_ticks(self, name: str, ticks: float) -> float:
        if name == "gripper":
            c = self.calibration[name]
            return (ticks - c.range_min) / (c.range_max - c.range_min)
        return (ticks - 2048) / _TICKS_PER_RAD

    def normalize(self, name: str, value: float) -> float:
        """A simulation value (radians; gripper opening 0..1) in the motor's normalised units."""
        t, c, mode = self._ticks(name, value), self.calibration[name], self.motors[name].norm_mode
        if mode is MotorNormMode.DEGREES:
            return (t - (c.range_min + c.range_max) / 2) * 360 / (RESOLUTION - 1)
        bounded = min(c.range_max, max(c.range_min, t))
        if mode is MotorNormMode.RANGE_M100_100:
            return (bounded - c.range_min) / (c.range_max - c.range_min) * 200 - 100
        return (bounded - c.range_min) / (c.range_max - c.range_min) * 100

    def unnormalize(self, name: str, value: float) -> float:
        c, mode = self.calibration[name], self.motors[name].norm_mode
        if mode is MotorNormMode.DEGREES:
            t = value * (RESOLUTION - 1) / 360 + (c.range_min + c.range_max) / 2
        elif mode is MotorNormMode.RANGE_M100_100:
            t = (value + 100) / 200 * (c.range_max - c.range_min) + c.range_min
        else:
            t = value / 100 * (c.range_max - c.range_min) + c.range_min
        return self._from_ticks(name, t)


class VirtualFollower(Robot):
    config_class = VirtualFollowerConfig
    name = "policy_steer_virtual_follower"

    def __init__(self, config: VirtualFollowerConfig) -> None:
        super().__init__(config)
        self.config = config
        self.bus = SimulatedMotorBus(list(config.motor_names), config.use_degrees)
        self.calibration = dict(self.bus.calibration)
        self.arm = VirtualArm(VirtualArmConfig(cameras=list(config.sim_cameras), image_size=config.image_size,
                                               start_ee=tuple(config.start_ee)))
        h, w = self.arm.cfg.size
        self._camera_shape = (h, w, 3)

    @property
    def _motors_ft(self) -> dict[str, type]:
        return {f"{m}.pos": float for m in self.bus.motors}

    @cached_property
    def observation_features(self) -> dict[str, type | tuple]:
        return {**self._motors_ft, **{cam: self._camera_shape for cam in self.config.sim_cameras}}

    @cached_property
    def action_features(self) -> dict[str, type]:
        return self._motors_ft

    @property
    def is_connected(self) -> bool:
        return self.bus.is_connected

    def connect(self, calibrate: bool = True) -> None:
        self.arm.connect()
        self.bus.is_connected = True

    @property
    def is_calibrated(self) -> bool:
        return True  # simulated motors come calibrated

    def calibrate(self) -> None:
        """Nothing to do: the calibration is the model's joint ranges."""

    def configure(self) -> None:
        """Nothing to configure on simulated motors."""

    def _require(self) -> None:
        if not self.is_connected:
            from lerobot.utils.errors import DeviceNotConnectedError

            raise DeviceNotConnectedError(f"{self} is not connected.")

    def get_observation(self) -> dict[str, Any]:
        self._require()
        obs = self.arm.observe()
        names = list(self.bus.motors)
        out: dict[str, Any] = {f"{n}.pos": self.bus.normalize(n, float(v)) for n, v in zip(names[:-1], obs.joints)}
        out["gripper.pos"] = self.bus.normalize("gripper", obs.gripper)
        for cam in self.config.sim_cameras:
            out[cam] = obs.images[cam].image
        return out

    def send_action(self, action: dict[str, Any]) -> dict[str, Any]:
        self._require()
        goal = {k.removesuffix(".pos"): float(v) for k, v in action.items() if k.endswith(".pos")}
        if self.config.max_relative_target is not None:
            present = self.get_observation()
            goal = ensure_safe_goal_position(
                {k: (g, present[f"{k}.pos"]) for k, g in goal.items()}, self.config.max_relative_target
            )
        names = list(self.bus.motors)
        last = self.arm.sent[-1] if self.arm.sent else None
        q = np.array([
            self.bus.unnormalize(n, goal[n]) if n in goal else (last[1][i] if last else self.arm.data.ctrl[i])
            for i, n in enumerate(names[:-1])
        ])
        grip = self.bus.unnormalize("gripper", goal["gripper"]) if "gripper" in goal else (last[2] if last else 1.0)
        self.arm.command(JointCommand(q, grip))
        return {f"{k}.pos": v for k, v in goal.items()}

    def disconnect(self) -> None:
        self._require()
        self.arm.disconnect()
        self.bus.is_connected = False
