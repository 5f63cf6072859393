"""One episode's reward for VLS: synthesis at reset, stage updates each chunk, failures counted.

An episode whose context lacks what VLS needs (no scene, no robot description, an action space with
no trajectory map) is **refused** before it starts (:meth:`EpisodeReward.refusal`, the strategy's
``refusal``): the caller gets the reason, never an unsteered run that looks steered.

At :meth:`EpisodeReward.reset` (the strategy's ``reset_episode``) a new program is synthesized for
the episode's scene through ``RewardSession.start(synthesizer, scene, image)`` (one model call per
episode, as VLS). When the synthesis fails (the backend's answer did not validate twice) the episode
runs unsteered and says so: the reason is logged and counted (:attr:`EpisodeReward.stats`), and
every chunk carries ``steered = 0``, ``synthesis_failed = 1`` and ``unsteered_reason``.

Each chunk (:meth:`EpisodeReward.for_chunk`) first updates the session's stage from the current
scene: the scene of the latest context update when one arrived since the last chunk (a simulator
sends its ground truth before every request: pushed blocks and jumping goals move the keypoints),
else the last scene known with the end effector and gripper read from the observation (keypoints
stay, the stage still advances). It then returns the
:class:`~policy_steer.steering.vls.chunk_reward.ChunkReward` of that chunk.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from policy_steer.scene import Scene
from policy_steer.errors import ConfigError
from policy_steer.policies.base import DenoisingPolicy
from policy_steer.steering.vls.chunk_reward import ChunkReward, trajectory_map_for
from policy_steer.types import OBS_IMAGES, OBS_STATE, EpisodeContext, RobotDescription
from policy_steer.vlm_rewards import RewardSession, SwitchConfig, SynthesisConfig, make_synthesizer
from policy_steer.vlm_rewards.synthesis.base import Synthesizer

log = logging.getLogger(__name__)


@dataclass
class EpisodeStats:
    """Counts over the strategy's life (a benchmark cell's episodes)."""

    episodes: int = 0
    steered: int = 0
    failed: int = 0  # episodes that ran unsteered
    failure_reasons: list[str] = field(default_factory=list)
    stage_switches: int = 0


class EpisodeReward:
    """The reward side of VLS for a sequence of episodes (see the module docstring)."""

    def __init__(
        self,
        policy: DenoisingPolicy,
        synthesis: SynthesisConfig | None = None,
        switch: SwitchConfig | None = None,
        clip_grad: str = "straight_through",
        synthesizer: Synthesizer | None = None,
    ) -> None:
        self.policy = policy
        self.synthesis = synthesis or SynthesisConfig()
        self.switch = switch or SwitchConfig()
        self.clip_grad = clip_grad
        self._synthesizer = synthesizer  # made on first use (a VLM backend loads its model once)
        self.stats = EpisodeStats()
        self.session: RewardSession | None = None
        self.failure: str | None = None  # why the current episode runs unsteered
        self._robot: RobotDescription | None = None
        self._scene: Scene | None = None
        self._scene_live = False  # the scene came from a context update since the last chunk
        self._switches_seen = 0

    @property
    def synthesizer(self) -> Synthesizer:
        if self._synthesizer is None:
            self._synthesizer = make_synthesizer(self.synthesis)
        return self._synthesizer

    # ---------------------------------------------------------------- episodes

    def reset(self, context: EpisodeContext, image: np.ndarray | None = None) -> None:
        """Synthesize the episode's program for ``context`` (accepted by :meth:`refusal` first)."""
        self.stats.episodes += 1
        self.session, self.failure = None, None
        self._robot, self._scene, self._scene_live = context.robot, context.scene, False
        self._switches_seen = 0
        reason = self.refusal(context)
        if reason is None:
            scene = self._scene
            if context.instruction and context.instruction != scene.instruction:
                scene = dataclasses.replace(scene, instruction=str(context.instruction))
            self.session = RewardSession.start(self.synthesizer, scene, image, cfg=self.switch)
            if self.session is None:
                reasons = self.synthesizer.stats.failure_reasons
                reason = f"synthesis failed ({self.synthesizer.name}): {reasons[-1] if reasons else 'no program'}"
        if reason is not None:
            self.failure = reason
            self.stats.failed += 1
            self.stats.failure_reasons.append(reason)
            log.warning("VLS: the episode runs unsteered: %s", reason)
        else:
            self.stats.steered += 1

    def update(self, context: EpisodeContext) -> None:
        """The scene now (a context update mid-episode); used as is by the next chunk."""
        if context.scene is not None:
            self._scene, self._scene_live = context.scene, True

    def set_session(self, session: RewardSession, robot: RobotDescription) -> None:
        """Use a ready session (a server that synthesized elsewhere, a test) instead of synthesizing."""
        self.session, self.failure = session, None
        self._robot, self._scene, self._scene_live = robot, session.scene, False
        self._switches_seen = len(session.events)

    def refusal(self, context: EpisodeContext) -> str | None:
        """Why VLS cannot steer an episode with ``context`` (None: it can)."""
        if context.scene is None:
            return "no scene description for this episode (send one in the episode context)"
        robot = context.robot
        if robot is None:
            return "no robot description (action mode, state layout) for this episode"
        if "ee_pos" not in robot.state_layout and robot.action_mode == "delta":
            return "the robot's state has no ee_pos slice (needed by the delta trajectory map)"
        try:
            trajectory_map_for(robot, self.policy.spec.action_dim, self.clip_grad)
        except ConfigError as e:
            return str(e)
        return None

    def export_state(self) -> Any:
        return (self.session, self.failure, self._robot, self._scene, self._scene_live, self._switches_seen)

    def import_state(self, state: Any) -> None:
        if state is None:
            self.session, self.failure, self._robot, self._scene, self._scene_live, self._switches_seen = (
                None, None, None, None, False, 0)
        else:
            self.session, self.failure, self._robot, self._scene, self._scene_live, self._switches_seen = state

    # ---------------------------------------------------------------- chunks

    @property
    def active(self) -> bool:
        return self.session is not None

    def for_chunk(self, obs: dict[str, Any] | None) -> ChunkReward | None:
        """Update the stage from the current scene and return this chunk's reward (None: unsteered)."""
        if self.session is None or self._robot is None:
            return None
        robot = self._robot
        ee = self._ee(obs)
        scene = self._current_scene(obs, ee)
        self.session.update(scene, image=self._image(obs))
        self.stats.stage_switches += len(self.session.events) - self._switches_seen
        self._switches_seen = len(self.session.events)
        policy = self.policy
        clip = robot.max_step if (robot.action_mode == "delta" and self.clip_grad == "straight_through") else None
        ee_t = torch.as_tensor(np.asarray(ee if ee is not None else scene.ee_position, dtype=np.float32), device=policy.device)
        return ChunkReward(
            session=self.session,
            traj_map=trajectory_map_for(robot, policy.spec.action_dim, self.clip_grad),
            unnormalize=policy.unnormalize_actions,
            rows=policy.chunk_slice,
            ee_start=ee_t,
            clip=clip,
        )

    def _ee(self, obs: dict[str, Any] | None) -> np.ndarray | None:
        """The end effector the chunk is conditioned on (the state in the observation: measured, or
        the future-state estimate under VLASH)."""
        if obs is None or OBS_STATE not in obs or "ee_pos" not in self._robot.state_layout:
            return None
        return np.asarray(obs[OBS_STATE], dtype=np.float64)[self._robot.state_layout["ee_pos"]]

    def _current_scene(self, obs: dict[str, Any] | None, ee: np.ndarray | None) -> Scene:
        if self._scene_live:
            self._scene_live = False
            return self._scene
        scene = self._scene if self._scene is not None else self.session.scene
        changes: dict[str, Any] = {}
        if ee is not None:
            changes["ee_position"] = [float(v) for v in ee]
        layout = self._robot.state_layout
        if obs is not None and OBS_STATE in obs and "gripper" in layout:
            changes["gripper_opening"] = float(np.asarray(obs[OBS_STATE])[layout["gripper"]].reshape(-1)[0])
        return dataclasses.replace(scene, **changes) if changes else scene

    @staticmethod
    def _image(obs: dict[str, Any] | None) -> np.ndarray | None:
        if not obs:
            return None
        for k, v in obs.items():
            if k.startswith(OBS_IMAGES + "."):
                return v
        return None
