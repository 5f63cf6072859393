"""The MJCF of a task world: floor, table, arm, cameras, plus the task's own bodies.

Frames: world z is up, the arm's base is at the origin and faces +x. The table top is at z = 0 in the
nominal variant. The table is a mocap body, so ``shifted-surface`` moves it (and everything placed in
table coordinates) through ``MjData.mocap_pos``; it collides as a plane (much cheaper than a box
against standing objects), the slab under it is only drawn. Everything that a reset randomises lives
in MjData (mocap poses, free joints), so a copy of MjData is a complete snapshot of an episode.

Collision classes: ``robot`` (contype 2, conaffinity 0; see :mod:`policy_steer.envs.arm`), ``solid``
and ``object`` (contype 1, conaffinity 3: they touch each other and the robot), ``marker``
(visual only).
"""

from __future__ import annotations

from policy_steer.envs.arm import EndEffector, arm_actuators, arm_body, arm_defaults, arm_equality

PHYSICS_DT = 0.002  # seconds per mj_step
TABLE_CENTER = (0.47, 0.0)  # x, y of the table's centre (nominal)
TABLE_HALF = (0.33, 0.42, 0.02)  # half extents of the table top slab
CAMERAS: tuple[str, ...] = ("front", "wrist")


def world_xml(end_effector: EndEffector, bodies: str, sensors: str = "", name: str = "policy_steer_task") -> str:
    """A complete model: the fixed world (floor, table, arm, cameras) plus ``bodies`` (MJCF bodies)
    and ``sensors`` (MJCF sensors)."""
    tx, ty = TABLE_CENTER
    hx, hy, hz = TABLE_HALF
    legs = "\n".join(
        f'<geom class="marker" type="box" pos="{sx * (hx - 0.04)} {sy * (hy - 0.04)} -0.39" size="0.025 0.025 0.37" rgba=".45 .32 .22 1"/>'
        for sx in (-1, 1) for sy in (-1, 1)
    )
    return f"""
<mujoco model="{name}">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{PHYSICS_DT}" integrator="implicitfast" cone="elliptic" impratio="3"/>
  <visual>
    <global offwidth="640" offheight="480"/>
    <quality shadowsize="1024"/>
    <headlight ambient=".45 .45 .45" diffuse=".5 .5 .5" specular=".1 .1 .1"/>
  </visual>
  <asset>
    <texture name="grid" type="2d" builtin="checker" rgb1=".82 .82 .84" rgb2=".72 .72 .75" width="128" height="128"/>
    <material name="floor" texture="grid" texrepeat="6 6"/>
  </asset>
  <default>{arm_defaults()}
    <default class="solid">
      <geom contype="1" conaffinity="3" friction="0.8 0.005 0.0001"/>
    </default>
    <default class="object">
      <geom contype="1" conaffinity="3" condim="4" friction="0.9 0.01 0.0005" density="600" solref="0.004 1"/>
    </default>
    <default class="marker">
      <geom contype="0" conaffinity="0" group="1"/>
    </default>
  </default>
  <worldbody>
    <light pos="0.4 -0.6 1.6" dir="0 0.3 -1" diffuse=".6 .6 .6" castshadow="false"/>
    <geom name="floor" class="marker" type="plane" pos="0 0 -0.76" size="2 2 0.05" material="floor" group="0"/>
    <camera name="front" pos="0.8 0 0.7" xyaxes="0 1 0 -0.852 0 0.524" fovy="55"/>
    <body name="table" mocap="true" pos="{tx} {ty} 0">
      <geom name="table_top" class="solid" type="plane" size="{hx} {hy} 0.01" rgba=".62 .47 .33 1"/>
      <geom name="table_slab" class="marker" type="box" pos="0 0 {-hz - 0.0005}" size="{hx} {hy} {hz}" rgba=".62 .47 .33 1"/>
      {legs}
    </body>
    {arm_body(end_effector)}
    {bodies}
  </worldbody>
  <actuator>
    {arm_actuators(end_effector)}
  </actuator>
  <equality>
    {arm_equality(end_effector)}
  </equality>
  <sensor>
    {sensors}
  </sensor>
</mujoco>"""


# Distractor shapes by index: (geom type, size, rgba). Light (they tip over when touched).
DISTRACTORS = (
    ("cylinder", "0.016 0.05", ".2 .6 .9 1"),
    ("box", "0.018 0.018 0.035", ".9 .8 .2 1"),
    ("cylinder", "0.014 0.04", ".6 .3 .8 1"),
)


def _distractor_size(i: int, height_scale: float) -> tuple[str, list[float], str]:
    kind, size, rgba = DISTRACTORS[i % len(DISTRACTORS)]
    sizes = [float(v) for v in size.split()]
    sizes[-1] *= height_scale
    return kind, sizes, rgba


def distractors_xml(n: int, height_scale: float = 1.0) -> str:
    """``n`` free distractor bodies (``distractor_i``, geom of the same name), parked below the floor
    until a reset places them; ``height_scale`` stretches them (a task may want taller ones)."""
    out = []
    for i in range(n):
        kind, sizes, rgba = _distractor_size(i, height_scale)
        size = " ".join(f"{v:g}" for v in sizes)
        out.append(
            f'<body name="distractor_{i}" pos="{0.3 + 0.1 * i} 0.6 -0.5"><freejoint name="distractor_{i}"/>'
            f'<geom name="distractor_{i}" class="object" type="{kind}" size="{size}" density="300" rgba="{rgba}"/></body>'
        )
    return "\n    ".join(out)


def distractor_half_height(i: int, height_scale: float = 1.0) -> float:
    return _distractor_size(i, height_scale)[1][-1]


def obstacle_xml(geom: str) -> str:
    """A static (mocap) obstacle body named ``obstacle`` holding ``geom`` (MJCF of one geom named ``obstacle``)."""
    return f'<body name="obstacle" mocap="true" pos="0 0.6 -0.5">{geom}</body>'
