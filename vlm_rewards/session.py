"""One episode's reward: the program, the current stage, its switching state and its compiled reward.

Switching (rule-based, as VLS, with a Schmitt trigger):

- a stage's **progress** on the observed state is ``1 - sqrt(C_now / C_entry)`` clipped to [0, 1],
  with ``C`` the stage's goal cost (:meth:`StageReward.goal_cost`) at the end effector and ``C_entry``
  its value when the stage was first entered;
- ``exit: progress``: move on when progress >= the stage's threshold (default ``up`` = 0.8);
- ``exit: gripper``: move on at the event (the gripper becomes closed / open); the gripper state is
  the last command when given, else the observed opening with hysteresis (closed at <=
  ``closed_below``, open at >= ``open_above``). An event is stronger evidence than progress: when it
  ends a *later* stage, the stages in between are skipped (a policy that grasps without visiting the
  pre-grasp point);
- back to the previous stage when what it achieved is lost: its progress fell below ``down`` (0.6)
  while the current stage has not got past ``down`` itself (never for a stage marked
  ``"revisit": false``, a via point), or its gripper event was undone (an object dropped);
- ``switching="vlm"``: a judge (a VLM backend's ``judge_stage``) decides progress exits instead, asked
  every ``judge_every`` updates; when it gives no answer the rule decides.

The scene is refreshed on every :meth:`RewardSession.update`, so keypoints that move (a pushed block,
a goal that jumps) move in the reward too.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Literal

import numpy as np
from torch import Tensor

from policy_steer.scene import Scene
from policy_steer.vlm_rewards.compile import StageReward, compile_program
from policy_steer.vlm_rewards.program import RewardProgram, Stage

log = logging.getLogger(__name__)

# judge(program, stage index, scene, image) -> True (done), False (not yet), None (no answer)
StageJudge = Callable[[RewardProgram, int, Scene, "np.ndarray | None"], "bool | None"]


@dataclass
class SwitchConfig:
    up: float = 0.8  # progress exit threshold when a stage gives none
    down: float = 0.6  # go back below this
    closed_below: float = 0.6  # observed opening (0 closed .. 1 open) at or below which the gripper is closed
    open_above: float = 0.9  # ... at or above which it is open
    allow_back: bool = True
    switching: Literal["rule", "vlm"] = "rule"
    judge_every: int = 5  # vlm: ask at most every this many updates


class RewardSession:
    """Holds a program for one episode and exposes the compiled reward of the current stage.

    ``session(traj [B, T, 3], gripper [B, T] | None) -> [B]`` is the current stage's reward at the
    session's progress; ``session.reward`` is the :class:`StageReward` itself.
    """

    def __init__(
        self,
        program: RewardProgram,
        scene: Scene,
        cfg: SwitchConfig | None = None,
        judge: StageJudge | None = None,
    ) -> None:
        self.program = program
        self.cfg = cfg or SwitchConfig()
        if self.cfg.switching == "vlm" and judge is None:
            log.warning("switching='vlm' without a judge: the rule decides")
        self.judge = judge
        self.scene = scene
        self.stage_index = 0
        self.updates = 0
        self.events: list[dict[str, Any]] = []  # every switch: step, from, to, why
        self._compiled = compile_program(program, scene)
        self._entry_cost: dict[int, float] = {}
        self._gripper_state = self._observed_gripper(scene, None, None)
        self._enter(0)

    @classmethod
    def start(
        cls,
        synthesizer: Any,
        scene: Scene,
        image: np.ndarray | None = None,
        *,
        camera: Any = None,
        cfg: SwitchConfig | None = None,
    ) -> "RewardSession | None":
        """Synthesize a program for a new episode and open its session; None when synthesis failed
        (logged and counted by the synthesizer: the episode runs unsteered). With
        ``cfg.switching == "vlm"`` the synthesizer's ``judge_stage`` decides progress exits."""
        program = synthesizer.try_synthesize(scene, image=image, camera=camera)
        if program is None:
            return None
        cfg = cfg or SwitchConfig()
        judge = getattr(synthesizer, "judge_stage", None) if cfg.switching == "vlm" else None
        return cls(program, scene, cfg, judge)

    # ---------------------------------------------------------------- the reward

    @property
    def stage(self) -> Stage:
        return self.program.stages[self.stage_index]

    @property
    def reward(self) -> StageReward:
        """The compiled reward of the current stage (against the latest scene)."""
        return self._compiled[self.stage_index]

    @property
    def progress(self) -> float:
        return self._progress(self.stage_index)

    def __call__(self, traj: Tensor, gripper: Tensor | None = None, progress: float | None = None) -> Tensor:
        """traj [B, T, 3], gripper [B, T] or None -> [B]: the current stage's reward."""
        return self.reward(traj, gripper, self.progress if progress is None else progress)

    # ---------------------------------------------------------------- switching

    def update(self, scene: Scene, gripper_command: float | None = None, image: np.ndarray | None = None) -> int:
        """Read the new observed state; switch stage when a condition fires. Returns the stage index."""
        self.updates += 1
        self.scene = scene
        self._compiled = compile_program(self.program, scene)
        before = self._gripper_state
        self._gripper_state = self._observed_gripper(scene, gripper_command, before)
        event = None
        if self._gripper_state != before and self._gripper_state != "between":
            event = "close" if self._gripper_state == "closed" else "open"
        k = self.stage_index
        last = len(self.program.stages) - 1
        if k > 0 and self.cfg.allow_back and self._lost(k - 1):
            self._switch(k - 1, self._why_lost(k - 1))
            return self.stage_index
        if event is not None:
            for j in range(k, last):
                exit_ = self.program.stages[j].exit
                if exit_.when == "gripper" and exit_.event == event:
                    skipped = f" (skipping {', '.join(repr(s.name) for s in self.program.stages[k:j])})" if j > k else ""
                    self._switch(j + 1, f"gripper {event}{skipped}")
                    return self.stage_index
        if k < last:
            done, why = self._done(k, image)
            if done:
                self._switch(k + 1, why)
        return self.stage_index

    def _done(self, k: int, image: np.ndarray | None) -> tuple[bool, str]:
        exit_ = self.program.stages[k].exit
        if exit_.when in ("never", "gripper"):  # gripper exits fire on events, in update()
            return False, ""
        if self.cfg.switching == "vlm" and self.judge is not None and self.updates % max(self.cfg.judge_every, 1) == 0:
            verdict = self.judge(self.program, k, self.scene, image)
            if verdict is not None:
                return bool(verdict), "vlm judge"
        p = self._progress(k)
        threshold = exit_.threshold if exit_.threshold is not None else self.cfg.up
        return p >= threshold, f"progress {p:.2f} >= {threshold}"

    def _lost(self, k: int) -> bool:
        """Whether what stage ``k`` (the previous one) achieved is undone."""
        exit_ = self.program.stages[k].exit
        if exit_.when == "gripper":
            want = "closed" if exit_.event == "close" else "open"
            return self._gripper_state not in (want, "between")
        if exit_.when == "progress":
            if not exit_.revisit:  # a via point: passing it was the point, moving away from it is not a loss
                return False
            return self._progress(k) < self.cfg.down and self._progress(k + 1) < self.cfg.down
        return False

    def _why_lost(self, k: int) -> str:
        exit_ = self.program.stages[k].exit
        if exit_.when == "gripper":
            return f"gripper {exit_.event} undone"
        return f"progress of {self.program.stages[k].name!r} {self._progress(k):.2f} < {self.cfg.down}"

    def _switch(self, to: int, why: str) -> None:
        self.events.append({"update": self.updates, "from": self.stage_index, "to": to, "why": why})
        log.info("stage %d (%s) -> %d (%s): %s", self.stage_index, self.stage.name, to, self.program.stages[to].name, why)
        self._enter(to)

    def _enter(self, k: int) -> None:
        self.stage_index = k
        if k not in self._entry_cost:
            self._entry_cost[k] = self._compiled[k].goal_cost(self.scene.ee_position)

    def _progress(self, k: int) -> float:
        stage = self._compiled[k]
        if not stage.has_goal:
            return 0.0
        if k not in self._entry_cost:
            return 0.0
        entry = self._entry_cost[k]
        now = stage.goal_cost(self.scene.ee_position)
        if entry <= 1e-9:
            return 1.0
        return float(min(max(1.0 - math.sqrt(now / entry), 0.0), 1.0))

    def _observed_gripper(self, scene: Scene, command: float | None, previous: str | None) -> str:
        if command is not None:
            return "closed" if command > 0 else "open"
        g = float(scene.gripper_opening)
        if g <= self.cfg.closed_below:
            return "closed"
        if g >= self.cfg.open_above:
            return "open"
        return previous or "between"

    def info(self) -> dict[str, Any]:
        """Plain data for telemetry and results: program, current stage, progress, switches."""
        return {
            "stage": self.stage_index,
            "stage_name": self.stage.name,
            "progress": self.progress,
            "switches": list(self.events),
            "program": self.program.to_dict(),
        }
