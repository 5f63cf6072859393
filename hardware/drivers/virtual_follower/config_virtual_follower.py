"""Config of the lerobot robot backed by the MuJoCo virtual arm (type ``policy_steer_virtual_follower``)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from lerobot.robots import RobotConfig

# The virtual arm has the SO-101's structure (pan, lift, elbow, wrist flex, wrist roll + gripper), so a
# stand-in (--virtual_arm) can present the SO-101's own feature names.
SO101_MOTORS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll"]


@RobotConfig.register_subclass("policy_steer_virtual_follower")
@dataclass
class VirtualFollowerConfig(RobotConfig):
    """Names ``sim_cameras`` (not ``cameras``: lerobot reserves that for real camera configs)."""

    motor_names: list[str] = field(default_factory=lambda: list(SO101_MOTORS))  # the five joints, in order
    use_degrees: bool = True  # joints in degrees (else -100..100), as SO followers
    max_relative_target: float | None = None  # lerobot's per-command cap, as SO followers
    sim_cameras: list[str] = field(default_factory=list)  # front, wrist
    image_size: str = "96x96"
    start_ee: tuple[float, float, float] = (0.28, 0.0, 0.16)

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.motor_names) != 5:
            raise ValueError(f"motor_names must name the 5 joints, got {self.motor_names}")
        if self.calibration_dir is None:  # simulated motors: keep lerobot's calibration folder out of $HOME
            self.calibration_dir = Path(tempfile.gettempdir()) / "policy_steer_virtual_follower"
