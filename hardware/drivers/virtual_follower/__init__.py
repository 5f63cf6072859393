"""A lerobot ``Robot`` whose motors are the MuJoCo virtual arm: lerobot's robot API without hardware.

Importing this package registers ``policy_steer_virtual_follower`` with lerobot's ``RobotConfig``, so
``make_robot_from_config(VirtualFollowerConfig(...))`` builds :class:`VirtualFollower`, as it builds an
SO-101. Used by the lerobot adapter's tests and by ``policy-steer robot --driver lerobot:... --virtual_arm``.
"""

from policy_steer.hardware.drivers.virtual_follower.config_virtual_follower import VirtualFollowerConfig
from policy_steer.hardware.drivers.virtual_follower.virtual_follower import SimulatedMotorBus, VirtualFollower

__all__ = ["SimulatedMotorBus", "VirtualFollower", "VirtualFollowerConfig"]
