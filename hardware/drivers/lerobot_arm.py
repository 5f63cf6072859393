"""Any lerobot robot (``lerobot.robots``: SO-100/101, Koch, OMX, ...) as an :class:`Arm`, through lerobot's API.

The robot is built with ``make_robot_from_config`` and driven only through lerobot's ``Robot`` API
(``observation_features``, ``action_features``, ``connect``, ``get_observation``, ``send_action``,
``disconnect``). Its features map to ours as lerobot's own datasets map them:

- the action vector is the robot's ``action_features`` in order (``shoulder_pan.pos`` ...
  ``gripper.pos``): joint position targets in the robot's units (degrees with ``use_degrees``, else
  -100..100; grippers 0..100). The feature whose name contains ``gripper`` is the gripper, the others
  are the joints. Only position actions are supported (a ``.vel`` action, e.g. a mobile base, is
  refused): this is the ``joint`` action space;
- ``observation.state`` is the robot's float observation features in order (the ``native`` layout);
  its camera features (``(h, w, 3)`` tuples) become ``observation.images.<name>``.

End-effector action spaces would need the robot's kinematics (lerobot's ``RobotKinematics``, placo and
the robot's URDF); none is wired in, so ``kinematics`` is None and no workspace box is enforced.

Limits: joint ranges from the motor bus's calibration (``robot.bus``: its motors' normalisation modes
and calibrated tick ranges, the same arithmetic lerobot uses to normalise), narrowed by a limits
file; a robot without a calibrated bus needs every joint's range in the limits file. Velocities: by
default 90 deg/s for joints in degrees, 100 units/s in -100..100 mode, 200 units/s for 0..100 grippers.

Arm model (``--driver_arg model=FILE``, with ``model_joints=a,b,..`` and ``model_ee_site=NAME``): an MJCF
of the arm alone (self-contained: primitive geoms, no meshes or includes), its joints in the order of the
commanded joints (default: their names without ``.pos``), published as the arm description the host sends
in its robot description. It is checked when the driver is made: a model that does not compile, lacks a
joint or the site, or has another number of joints than the robot commands is refused. The model is in
MuJoCo's units (radians); the joint-space future state of this driver stays "the arm reached its pending
targets" (exact for position targets), the ``kinematic`` estimator needs a state with ``ee_pos`` and
``joint_pos`` (an end-effector action space), which needs kinematics this driver does not have yet.

``connect`` never starts lerobot's interactive calibration (it raises instead: calibrate first with
``lerobot-calibrate``). Safe stop: the present joint positions are sent as the goal (the arm freezes
with torque on; ``stop_torque_off`` also disables torque, which drops an arm that gravity pulls) and
further commands raise ``ArmStopped``. ``disconnect`` is lerobot's (SO followers disable torque
unless ``disable_torque_on_disconnect=false`` is passed as a driver argument).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from policy_steer.hardware.arm import Arm, ArmObservation, CameraFrame, JointCommand
from policy_steer.hardware.errors import ArmStopped, DriverUnavailable, SafetyError
from policy_steer.hardware.limits import ArmLimits, narrow
from policy_steer.runtime.arm_model import ArmModel
from policy_steer.types import ArmDescription

DEFAULT_VELOCITY = {"degrees": 90.0, "range_m100_100": 100.0, "range_0_100": 200.0}


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


def motor_range(norm_mode: str, range_min: int, range_max: int, resolution: int) -> tuple[float, float]:
    """The range of a calibrated motor in lerobot's normalised units (``MotorsBus._normalize``)."""
    if norm_mode == "range_m100_100":
        return -100.0, 100.0
    if norm_mode == "range_0_100":
        return 0.0, 100.0
    if norm_mode == "degrees":
        mid = (range_min + range_max) / 2
        return (range_min - mid) * 360 / (resolution - 1), (range_max - mid) * 360 / (resolution - 1)
    raise SafetyError(f"unknown motor normalisation mode {norm_mode!r}")


def limits_from_bus(bus: Any, names: tuple[str, ...]) -> dict[str, tuple[float, float, str]]:
    """feature name (``motor.pos``) -> (low, high, norm mode) for the motors of a calibrated lerobot bus."""
    out = {}
    calib = getattr(bus, "calibration", None) or {}
    for name in names:
        motor = name.removesuffix(".pos")
        m = bus.motors.get(motor)
        c = calib.get(motor)
        if m is None or c is None:
            continue
        mode = getattr(m.norm_mode, "value", str(m.norm_mode))
        res = bus.model_resolution_table[m.model]
        lo, hi = motor_range(mode, c.range_min, c.range_max, res)
        out[name] = (min(lo, hi), max(lo, hi), mode)
    return out


class LerobotArm(Arm):
    def __init__(
        self,
        robot: Any,
        control_hz: float = 30.0,
        max_joint_velocity: float | None = None,
        limits_spec: dict[str, Any] | None = None,
        stop_torque_off: bool = False,
        arm_model: ArmDescription | None = None,
    ) -> None:
        self.robot = robot
        self.name = f"lerobot:{getattr(robot, 'name', type(robot).__name__)}"
        self.control_hz = float(control_hz)
        self.stop_torque_off = stop_torque_off
        actions = dict(robot.action_features)
        not_pos = [k for k in actions if not k.endswith(".pos")]
        if not_pos:
            raise SafetyError(f"{self.name} has non-position actions {not_pos}: only joint-position action spaces are supported")
        grippers = [k for k in actions if "gripper" in k]
        self.gripper_name = grippers[0] if grippers else None
        self.joint_names = tuple(k for k in actions if k != self.gripper_name)
        obs = dict(robot.observation_features)
        missing = [k for k in actions if k not in obs]
        if missing:
            raise SafetyError(f"{self.name} does not observe its commanded joints {missing}")
        self.state_names = tuple(k for k, v in obs.items() if v is float)
        self.cameras = tuple(k for k, v in obs.items() if isinstance(v, tuple) and len(v) == 3 and v[2] == 3)
        self.camera_shapes = {k: tuple(obs[k]) for k in self.cameras}
        self.kinematics = None
        self._max_velocity = max_joint_velocity
        self._limits_spec = limits_spec or {}
        self._limits: ArmLimits | None = None
        self._lock = threading.Lock()
        self._stopped = False
        self.sent: list[tuple[float, dict[str, float]]] = []
        if arm_model is not None:
            if not arm_model.joints:  # by default the commanded joints, named without ".pos"
                arm_model = dataclasses.replace(arm_model, joints=tuple(
                    j[: -len(".pos")] if j.endswith(".pos") else j for j in self.joint_names))
            model = ArmModel(arm_model)  # compiles; names a joint or site the model lacks
            if model.n != len(self.joint_names):
                raise SafetyError(
                    f"{self.name}: the arm model's joints {list(arm_model.joints)} ({model.n}) do not match the robot's "
                    f"commanded joints {list(self.joint_names)} ({len(self.joint_names)})"
                )
        self._arm_model = arm_model

    # --- Arm ---------------------------------------------------------------------------------------
    def arm_description(self) -> ArmDescription | None:
        return self._arm_model

    @property
    def limits(self) -> ArmLimits:
        if self._limits is None:
            self._limits = self._make_limits()
        return self._limits

    @property
    def stopped(self) -> bool:
        return self._stopped

    def connect(self) -> None:
        r = self.robot
        try:
            r.connect(calibrate=False)
        except ImportError as e:
            raise DriverUnavailable(f"{self.name} needs a package that is missing: {_one_line(e)}") from None
        except Exception as e:  # noqa: BLE001 - serial ports, cameras, handshakes: one line that names the device
            port = getattr(getattr(r, "config", None), "port", None)
            where = f" on {port}" if port else ""
            raise DriverUnavailable(f"{self.name} could not connect{where}: {_one_line(e)}") from None
        if not r.is_calibrated:
            self._safe_disconnect()
            raise DriverUnavailable(
                f"{self.name} (id {getattr(r, 'id', None)!r}) is not calibrated: run lerobot-calibrate for it first"
            )
        _ = self.limits  # fail before the first command, not during it
        with self._lock:
            self._stopped = False

    def disconnect(self) -> None:
        self._safe_disconnect()

    def observe(self) -> ArmObservation:
        with self._lock:  # lerobot's motor buses are not thread-safe: a safe stop may come from another thread
            raw = self.robot.get_observation()
        stamp = time.monotonic()
        joints = np.array([float(raw[k]) for k in self.joint_names])
        grip = float(raw[self.gripper_name]) if self.gripper_name else 0.0
        state = np.array([float(raw[k]) for k in self.state_names])
        images = {k: CameraFrame(np.asarray(raw[k]), stamp) for k in self.cameras if k in raw}
        return ArmObservation(stamp=stamp, joints=joints, gripper=grip, state=state, state_names=self.state_names, images=images)

    def command(self, cmd: JointCommand) -> None:
        action = {k: float(v) for k, v in zip(self.joint_names, cmd.joints)}
        if self.gripper_name:
            action[self.gripper_name] = float(cmd.gripper)
        with self._lock:
            if self._stopped:
                raise ArmStopped(f"{self.name} is stopped; it takes no more commands")
            sent = self.robot.send_action(action)
            self.sent.append((time.monotonic(), dict(sent)))
            del self.sent[:-1000]

    def safe_stop(self) -> None:
        with self._lock:
            self._stopped = True  # first: nothing else goes out, whatever happens below
            try:
                raw = self.robot.get_observation()
                self.robot.send_action({k: float(raw[k]) for k in self.action_names})
            finally:
                if self.stop_torque_off and hasattr(self.robot, "bus"):
                    self.robot.bus.disable_torque()

    def narrow_limits(self, spec: dict[str, Any]) -> None:
        """The limits file is read with the robot's own joint names (``shoulder_pan.pos``, ...)."""
        self._limits_spec = spec
        self._limits = None
        _ = self.limits

    # --- helpers -----------------------------------------------------------------------------------
    def _make_limits(self) -> ArmLimits:
        names = self.action_names
        bus = getattr(self.robot, "bus", None)
        from_bus = limits_from_bus(bus, names) if bus is not None and hasattr(bus, "motors") else {}
        given = self._limits_spec.get("joints", {})
        unknown = [n for n in names if n not in from_bus and n not in given]
        if unknown:
            raise SafetyError(
                f"{self.name}: no range for {unknown} (no calibrated motor bus); give them in a limits file "
                "(--limits FILE with 'joints: {name: [low, high]}')"
            )
        lo = np.array([from_bus[n][0] if n in from_bus else -np.inf for n in names])
        hi = np.array([from_bus[n][1] if n in from_bus else np.inf for n in names])
        for i, n in enumerate(names):
            if n in given:
                a, b = (float(v) for v in given[n])
                lo[i], hi[i] = (a, b) if n not in from_bus else (max(lo[i], a), min(hi[i], b))
        modes = [from_bus[n][2] if n in from_bus else "degrees" for n in names]
        vel = np.array([self._max_velocity or DEFAULT_VELOCITY[m] for m in modes])
        k = len(self.joint_names)
        g_lo, g_hi = (float(lo[k]), float(hi[k])) if self.gripper_name else (0.0, 1.0)
        base = ArmLimits(joint_low=lo[:k], joint_high=hi[:k], max_joint_velocity=vel[:k],
                         gripper_low=g_lo, gripper_high=g_hi,
                         max_gripper_velocity=float(vel[k]) if self.gripper_name else None)
        spec = {key: v for key, v in self._limits_spec.items() if key != "joints"}
        spec["joints"] = {n: v for n, v in given.items() if n in self.joint_names}
        if self.gripper_name in given:
            spec["gripper"] = given[self.gripper_name]
        return narrow(base, self.joint_names, spec)

    @property
    def gripper_open(self) -> float:  # type: ignore[override]
        return self.limits.gripper_high

    @property
    def gripper_closed(self) -> float:  # type: ignore[override]
        return self.limits.gripper_low

    def _safe_disconnect(self) -> None:
        try:
            if self.robot.is_connected:
                self.robot.disconnect()
        except Exception:  # noqa: BLE001 - shutting down: nothing left to protect
            pass


def make_lerobot_arm(type_name: str, args: dict[str, str], **arm_options: Any) -> LerobotArm:
    """Build the lerobot robot ``type_name`` from driver args (not connected yet)."""
    from lerobot.robots import make_robot_from_config

    from policy_steer.hardware.drivers.lerobot_registry import parse_robot_config

    args = dict(args)
    model = arm_model_from_args(args)  # our keys leave args: the rest is the lerobot robot's config
    cfg = parse_robot_config(type_name, args)
    try:
        robot = make_robot_from_config(cfg)
    except ImportError as e:
        raise DriverUnavailable(f"lerobot:{type_name} is unavailable here: {str(e).strip().splitlines()[0]}") from None
    except Exception as e:  # noqa: BLE001
        raise DriverUnavailable(f"lerobot:{type_name} could not be created: {_one_line(e)}") from None
    if model is not None:
        path, joints, site = model
        arm_options["arm_model"] = ArmDescription(mjcf=_read_model(path), joints=joints or (), ee_site=site)
    return LerobotArm(robot, **arm_options)


MODEL_ARGS = ("model", "model_joints", "model_ee_site")


def arm_model_from_args(args: dict[str, str]) -> tuple[str, tuple[str, ...] | None, str] | None:
    """Pops ``model``, ``model_joints``, ``model_ee_site`` from the driver args: (file, joints or None, site)."""
    path = args.pop("model", None)
    joints = args.pop("model_joints", None)
    site = args.pop("model_ee_site", None)
    if path is None:
        if joints is not None or site is not None:
            raise SafetyError("model_joints and model_ee_site need model=FILE (an MJCF of the arm alone)")
        return None
    names = None if joints is None else tuple(j.strip() for j in joints.split(",") if j.strip())
    return path, names, site or "ee"


def _read_model(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as e:
        raise SafetyError(f"cannot read the arm model file {path!r}: {e.strerror or e}") from None
