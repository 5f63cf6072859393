"""Reward programs by rules, from the scene description and the instruction (no model).

The default backend here (no VLM weights can be downloaded). Per task:

- ``reach``: one stage: reach the goal.
- ``push``: approach the push point behind the block (on the side away from the target, at pushing
  height) while staying clear of the block, until the tip is within ``push_reach_tolerance`` of it;
  then move along the block -> target axis (a weak term: the pushing is the policy's) until the
  block's centre is on the target. Optionally (``detour``) first round the block on the side away
  from an obstacle or distractor (a via point, never revisited).
- ``pick-place``: above the cube (gripper open) -> down to the cube (until the gripper closes) ->
  above the target (gripper closed) -> onto the target (until the gripper opens). Over an obstacle on
  the carry path taller than the carry height (read from the scene), the carry goes ``carry_over``
  above its top and stays ``carry_over_margin`` above it. Opt-in (``carry_rise``, ``carry_clear_box``):
  a ``rise`` stage straight up before the carry, heights stated above the table top the robot sees
  (``reach_above_surface``), and the margin kept only near the obstacle (``clear_box``).
- ``lift``: to the cube (until the gripper closes) -> up, past the height marker (the scene's goal
  object) when there is one.

Every stage also stays clear of each obstacle and distractor (a margin of the end effector's radius
plus a clearance), above the table top, inside the workspace, and moves smoothly. The task is the
scene's; when the scene names none it is read from the instruction's verbs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from policy_steer.scene import Scene, SceneObject
from policy_steer.vlm_rewards.compile import compile_program
from policy_steer.vlm_rewards.errors import ProgramError
from policy_steer.vlm_rewards.program import RewardProgram
from policy_steer.vlm_rewards.synthesis.base import Synthesizer

TASKS: tuple[str, ...] = ("reach", "push", "pick-place", "lift")
_VERBS = (("pick", "pick-place"), ("place", "pick-place"), ("lift", "lift"), ("push", "push"), ("reach", "reach"))


@dataclass
class OfflineConfig:
    clearance: float = 0.015  # metres kept from obstacles beyond the end effector's radius
    distractor_clearance: float = 0.005  # ... from distractors (they stand close to the goal: keep it small)
    pusher_radius: float = 0.015  # reach, push: the tip sphere
    # reach, push: the hand and wrist (radius 0.025-0.03, 7.5-15 cm above the tip) pass at the height of
    # a tall obstacle's top; with the tip's radius alone the reward calls safe the paths on which they hit it
    pusher_hand_radius: float = 0.04
    gripper_radius: float = 0.04  # pick-place, lift: about half the hand's width (palm and fingers)
    pusher_above: float = 0.012  # lowest tip centre above the table top (push height 0.02 leaves room)
    gripper_above: float = 0.012  # lowest ee site above the table top (finger pads reach 1 cm below it)
    push_height: float = 0.02  # tip centre above the table top while pushing
    push_standoff: float = 0.015  # gap between tip and block at the push point
    # push: the approach ends when the tip is this close to the push point. Progress is relative to the
    # distance at the stage's start (1 - d / d0), so a fixed 0.8 would end a 30 cm approach 6 cm short of
    # the push point, beside the block rather than behind it; the threshold is set from d0 instead.
    push_reach_tolerance: float = 0.02
    # push: going round the block on the free side first (an "around" stage, a via point the session
    # never returns to) when an obstacle or a distractor crowds one side. Off by default: on push
    # obstacle (old 6k-step policy, seeds 0..11) it fixed the episodes in which the policy committed to
    # the pillar's side in its first chunk but lost more by pulling the tip to the via point: 7/12 with,
    # 9/12 without.
    detour: bool = False
    detour_clearance: float = 0.05  # the via point's distance from the block's side face
    detour_tolerance: float = 0.04  # how close the tip must get to it before the approach stage
    pregrasp_height: float = 0.07  # ee above the cube centre before descending
    carry_height: float = 0.12  # ee above the table top when over the target
    # pick-place: an obstacle on the carry path taller than that is passed over: the carry goal is
    # carry_over above its top and the whole carry keeps the ee carry_over_margin above it (the cube
    # hangs about its half size below the ee, the finger pads 1 cm)
    carry_over: float = 0.06
    carry_over_margin: float = 0.04
    # issue 18: rise straight up over a tall obstacle before carrying (off: the carry alone goes over it).
    # Off by default: on pick-place obstacle (seeds 1000..1019, B = 4) rise + clear_box got 0/20 against 2/20
    # (5/20 against 2/20 at guidance_scale 200): the policy's carry stays at its own height either way
    # (docs/results/robustness/README.md)
    carry_rise: bool = False
    # issue 18: keep above the obstacle only near it (clear_box, within carry_clear_reach of its footprint)
    # instead of holding the whole carry above its top (stay_above). Off by default, as carry_rise
    carry_clear_box: bool = False
    carry_clear_reach: float = 0.08
    # issue 18: weight of the goal of the rise and of the carry over a tall obstacle. The policy never
    # carried that high: with the usual goal weight the raw reward gradient is too weak to lift it
    w_over: float = 1.0
    lift_height: float = 0.15  # ee above the cube when lifting, without a height marker in the scene
    lift_margin: float = 0.03  # ee above the height marker (the goal) when lifting
    w_goal: float = 1.0
    # push: the pushing itself is what the policy does best; its goal term mostly ranks particles, and a
    # strong one prefers the chunk that keeps shoving over the one that goes round to realign a turned block
    w_push: float = 0.1
    w_clear: float = 50.0
    w_surface: float = 50.0
    w_inside: float = 10.0
    # push: no_backtrack (0: left out). It forbade the policy's own recovery (backing off to go round a
    # block that turned), which left the tip shoving at the block's corner until time ran out.
    w_backtrack: float = 0.0
    w_smooth: float = 1.0
    w_grip: float = 0.01


class OfflineSynthesizer(Synthesizer):
    name = "offline"

    def __init__(self, cfg: OfflineConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or OfflineConfig()

    def synthesize(
        self, scene: Scene, instruction: str | None = None, image: np.ndarray | None = None, *, camera: Any = None
    ) -> RewardProgram:
        self.stats.calls += 1
        instruction = scene.instruction if instruction is None else instruction
        try:
            task = task_of(scene, instruction)
            stages = {"reach": self._reach, "push": self._push, "pick-place": self._pick_place, "lift": self._lift}[task](scene)
            notes = f"offline rules for {task}"
            data = {"version": 1, "task": task, "instruction": instruction, "notes": notes, "stages": stages}
            program = RewardProgram.from_dict(data, scene)
            compile_program(program, scene)  # numbers that only fail in this scene fail here
        except (ProgramError, LookupError, ValueError) as e:
            raise self._failed([str(e)]) from e
        self.stats.succeeded += 1
        return program

    # ---------------------------------------------------------------- tasks

    def _reach(self, scene: Scene) -> list[dict]:
        goal = _first(scene, ("goal", "target"), "a goal to reach")
        r = self.cfg.pusher_radius
        guards = self._guards(scene, r, self.cfg.pusher_above, obstacle_radius=self.cfg.pusher_hand_radius)
        return [_stage("reach", [_t("reach", self.cfg.w_goal, point=goal.name)] + guards, "never")]

    def _push(self, scene: Scene) -> list[dict]:
        c = self.cfg
        block = _first(scene, ("manipuland",), "a block to push")
        target = _first(scene, ("target", "goal"), "a target to push to")
        r = c.pusher_radius
        u = _unit_xy(np.subtract(target.position, block.position))
        extent = _extent_along(block, u)
        behind = extent + r + c.push_standoff
        dz = scene.surface_height + c.push_height - block.position[2]
        offset = _mm([-u[0] * behind, -u[1] * behind, dz])
        bname, tname = block.name, target.name
        guards = self._guards(scene, r, c.pusher_above, obstacle_radius=c.pusher_hand_radius)
        approach = [
            _t("reach", c.w_goal, point=bname, offset=offset),
            _t("stay_clear", c.w_clear, object=block.name, margin=r + 0.005, shape="box"),
        ]
        push = [_t("move_along", c.w_push, start=bname, end=tname, overshoot=_mm([-(extent + r)])[0], planar=True)]
        if c.w_backtrack > 0:
            push.append(_t("no_backtrack", c.w_backtrack, start=bname, end=tname))
        stages = []
        start = np.asarray(scene.ee_position, dtype=float)
        side = self._detour_side(scene, block, u, r) if c.detour else None
        if side is not None:
            # one side of the block is crowded (an obstacle or a distractor next to the way round):
            # go round on the other side first. The first chunks cannot see a pillar 20 cm ahead; this
            # term tells their particles apart before the policy commits to a side.
            n = np.array([-u[1], u[0]]) * side
            lateral = _extent_along(block, n) + c.detour_clearance
            via = _mm([n[0] * lateral, n[1] * lateral, dz])
            dv = float(np.linalg.norm(np.add(block.position, via) - start))
            around = [_t("reach", c.w_goal, point=bname, offset=via),
                      _t("stay_clear", c.w_clear, object=block.name, margin=r + 0.005, shape="box")]
            around_stage = _stage("around", around + guards, ("progress", _tolerance_threshold(dv, c.detour_tolerance)))
            around_stage["exit"]["revisit"] = False  # a via point: once round, never pulled back to it
            stages.append(around_stage)
            start = np.add(block.position, via)
        d0 = float(np.linalg.norm(np.add(block.position, offset) - start))
        threshold = _tolerance_threshold(d0, c.push_reach_tolerance)
        return stages + [_stage("approach", approach + guards, ("progress", threshold)), _stage("push", push + guards, "never")]

    def _detour_side(self, scene: Scene, block: SceneObject, u: np.ndarray, r: float) -> int | None:
        """+1 / -1 (the side of the normal (-u_y, u_x)) to go round the block on when the other side is
        crowded by an obstacle or a distractor; None when both are free (the policy chooses)."""
        c = self.cfg
        others = [o for o in scene.objects if o.kind in ("obstacle", "distractor")]
        if not others:
            return None
        n = np.array([-u[1], u[0]])
        room = {}
        for side in (1, -1):
            lateral = _extent_along(block, n) + c.detour_clearance
            # the way round: beside the block, from level with its front to behind it
            pts = [np.asarray(block.position[:2]) + side * lateral * n + a * u for a in (0.03, 0.0, -0.07)]
            room[side] = min(_planar_clearance(o, p) for o in others for p in pts)
        need = c.pusher_hand_radius + c.clearance
        if min(room.values()) >= need:
            return None
        return 1 if room[1] >= room[-1] else -1

    def _pick_place(self, scene: Scene) -> list[dict]:
        c = self.cfg
        cube = _first(scene, ("manipuland",), "an object to pick")
        target = _first(scene, ("target", "goal"), "a place to put it")
        cname, tname = cube.name, target.name
        guards = self._guards(scene, c.gripper_radius, c.gripper_above)
        hover = scene.surface_height + c.carry_height - target.position[2]
        carry = [_t("reach", c.w_goal, point=tname, offset=_mm([0.0, 0.0, hover]))]
        carry_guards = list(guards)
        rise: list[dict] = []
        wall = self._tallest_on_the_way(scene, cube, target, c.gripper_radius + c.clearance)
        top = None if wall is None else wall.position[2] + wall.half_size[2]
        if top is not None and top + c.carry_over > scene.surface_height + c.carry_height:
            # an obstacle stands on the carry path, taller than the usual carry height: over it (the
            # cube hangs below the end effector)
            if c.carry_clear_box:
                carry_guards.append(_t("clear_box", c.w_surface, object=wall.name, margin=c.carry_over_margin,
                                       reach=c.carry_clear_reach))
            else:
                carry_guards.append(_t("stay_above", c.w_surface, height=_mm([top])[0], margin=c.carry_over_margin))
            if c.carry_rise:
                # straight up first, then across, at a height stated over the table the robot sees: the
                # policy carries at its own (lower) height, the reward lifts before it moves on
                over = _mm([top + c.carry_over - scene.surface_height])[0]
                up = [_t("reach_above_surface", c.w_over, point=cname, height=over), _t("grip", c.w_grip, command="close")]
                rise = [_stage("rise", up + carry_guards, "progress")]
                carry = [_t("reach_above_surface", c.w_over, point=tname, height=over)]
            else:
                carry = [_t("reach", c.w_goal, point=tname, offset=_mm([0.0, 0.0, top + c.carry_over - target.position[2]]))]
        # the cube's centre ends half its height above the target's top
        place = target.position[2] + target.half_size[2]
        place_dz = place + cube.half_size[2] - target.position[2]
        return [
            *self._grasp_stages(scene, cube, cname, guards),
            *rise,
            _stage("carry", carry + [_t("grip", c.w_grip, command="close")] + carry_guards, "progress"),
            _stage("place", [_t("reach", c.w_goal, point=tname, offset=_mm([0.0, 0.0, place_dz]))] + guards, ("gripper", "open")),
        ]

    def _lift(self, scene: Scene) -> list[dict]:
        c = self.cfg
        cube = _first(scene, ("manipuland",), "an object to lift")
        cname = cube.name
        guards = self._guards(scene, c.gripper_radius, c.gripper_above)
        goals = [o for o in scene.objects if o.kind in ("goal", "target")]
        if goals:  # a height marker: the cube's centre (about the ee) must get above it
            up = _t("reach", c.w_goal, point=goals[0].name, offset=[0.0, 0.0, c.lift_margin])
        else:  # no marker: lift_height above the cube, wherever it is
            up = _t("reach", c.w_goal, point=cname, offset=[0.0, 0.0, c.lift_height])
        # no pre-grasp stage: a Panda may come in from the side (robosuite's own Lift demonstrations do)
        return [
            _stage("grasp", [_t("reach", c.w_goal, point=cname)] + guards, ("gripper", "close")),
            _stage("lift", [up, _t("grip", c.w_grip, command="close")] + guards, "never"),
        ]

    @staticmethod
    def _tallest_on_the_way(scene: Scene, a: SceneObject, b: SceneObject, reach: float) -> SceneObject | None:
        """The tallest obstacle (highest top) whose footprint comes within ``reach`` metres (horizontally)
        of the segment from ``a`` to ``b``; None when there is none."""
        p, q = np.asarray(a.position[:2], dtype=float), np.asarray(b.position[:2], dtype=float)
        tops = []
        for o in scene.objects:
            if o.kind != "obstacle":
                continue
            c = np.asarray(o.position[:2], dtype=float)
            d = q - p
            t = float(np.clip(np.dot(c - p, d) / max(float(np.dot(d, d)), 1e-12), 0.0, 1.0))
            dist = float(np.linalg.norm(c - (p + t * d)))
            if dist - float(np.hypot(o.half_size[0], o.half_size[1])) < reach:
                tops.append((float(o.position[2] + o.half_size[2]), o))
        return max(tops, key=lambda t: t[0])[1] if tops else None

    def _grasp_stages(self, scene: Scene, cube: SceneObject, cname: str, guards: list[dict]) -> list[dict]:
        c = self.cfg
        # above the cube, clear of it (the fingers must not hit it from the side), gripper open
        pre = [
            _t("reach", c.w_goal, point=cname, offset=[0.0, 0.0, c.pregrasp_height]),
            _t("stay_clear", c.w_clear, object=cube.name, margin=0.02, shape="box"),
            _t("grip", c.w_grip, command="open"),
        ]
        grasp = [_t("reach", c.w_goal, point=cname)]
        return [_stage("pre-grasp", pre + guards, "progress"), _stage("grasp", grasp + guards, ("gripper", "close"))]

    def _guards(self, scene: Scene, radius: float, above: float, obstacle_radius: float | None = None) -> list[dict]:
        c = self.cfg
        gap = {"obstacle": c.clearance, "distractor": c.distractor_clearance}
        size = {"obstacle": max(radius, obstacle_radius or radius), "distractor": radius}
        terms = [
            _t("stay_clear", c.w_clear, object=o.name, margin=round(size[o.kind] + gap[o.kind], 4))
            for o in scene.objects
            if o.kind in gap
        ]
        terms.append(_t("stay_above", c.w_surface, margin=above))
        lo, hi = np.asarray(scene.workspace_low), np.asarray(scene.workspace_high)
        if np.all(hi - lo > 0.02):  # a scene without a workspace box has low == high
            terms.append(_t("stay_inside", c.w_inside))
        terms.append(_t("smoothness", c.w_smooth, order=2))
        return terms


# -------------------------------------------------------------------- helpers


def task_of(scene: Scene, instruction: str) -> str:
    """The task: the scene's when it is a known one, else the first known verb of the instruction."""
    if scene.task in TASKS:
        return scene.task
    words = instruction.lower()
    for verb, task in _VERBS:
        if verb in words:
            return task
    raise LookupError(f"offline: no rules for task {scene.task!r} / instruction {instruction!r} (know: {', '.join(TASKS)})")


def _first(scene: Scene, kinds: tuple[str, ...], what: str) -> SceneObject:
    for kind in kinds:
        for o in scene.objects:
            if o.kind == kind:
                return o
    names = [o.name for o in scene.objects]
    raise LookupError(f"offline: the scene has no {' or '.join(kinds)} object ({what}); objects: {names}")


def _unit_xy(d: np.ndarray) -> np.ndarray:
    n = math.hypot(d[0], d[1])
    if n < 1e-6:
        raise ValueError("offline: the block already sits on the target (no push direction)")
    return np.array([d[0] / n, d[1] / n])


def _extent_along(o: SceneObject, u: np.ndarray) -> float:
    """Half the object's width along the horizontal unit vector ``u`` (its yaw included)."""
    if o.shape in ("sphere", "cylinder"):
        return float(o.half_size[0])
    c, s = math.cos(o.yaw), math.sin(o.yaw)
    ex, ey = np.array([c, s]), np.array([-s, c])
    return float(abs(u @ ex) * o.half_size[0] + abs(u @ ey) * o.half_size[1])


def _planar_clearance(o: SceneObject, p: np.ndarray) -> float:
    """Horizontal distance from the point ``p`` [2] to the object's footprint (its bounding circle for
    spheres and cylinders, its yawed box otherwise); negative inside."""
    d = np.asarray(p, dtype=float) - np.asarray(o.position[:2], dtype=float)
    if o.shape in ("sphere", "cylinder"):
        return float(np.linalg.norm(d) - o.half_size[0])
    c, s = math.cos(o.yaw), math.sin(o.yaw)
    local = np.abs(np.array([c * d[0] + s * d[1], -s * d[0] + c * d[1]])) - np.asarray(o.half_size[:2], dtype=float)
    return float(np.linalg.norm(np.maximum(local, 0.0)) + min(max(local[0], local[1]), 0.0))


def _mm(v: list[float]) -> list[float]:
    """Metres rounded to 0.1 mm: programs stay readable, the rounding is far below tracking error."""
    return [round(float(x), 4) + 0.0 for x in v]


def _t(term: str, weight: float, **args: Any) -> dict:
    return {"term": term, "weight": weight, "args": args}


def _tolerance_threshold(d0: float, tolerance: float, lo: float = 0.8, hi: float = 0.97) -> float:
    """The progress threshold (progress = 1 - d / d0) at which a reach is within ``tolerance`` metres,
    for a stage entered ``d0`` metres away; kept in [lo, hi] (a short reach keeps the default 0.8)."""
    if d0 <= 1e-6:
        return lo
    return round(min(max(1.0 - tolerance / d0, lo), hi), 3)


def _stage(name: str, terms: list[dict], exit_: str | tuple) -> dict:
    if isinstance(exit_, tuple) and exit_[0] == "progress":
        ex = {"when": "progress", "threshold": float(exit_[1])}
    elif exit_ == "progress":
        ex = {"when": "progress", "threshold": 0.8}
    elif exit_ == "never":
        ex = {"when": "never"}
    else:
        ex = {"when": "gripper", "event": exit_[1]}
    return {"name": name, "terms": terms, "exit": ex}
