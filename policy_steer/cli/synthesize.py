"""``policy-steer synthesize``: print the reward program for the scene of a task variant.

    policy-steer synthesize --task push --variant obstacle --backend offline [--seed 0] [--out program.json]

The env is reset with ``--seed`` and its scene read; VLM backends also get the rendered front camera
image with the keypoints drawn on it. Options of the VLM backends are those of
:class:`~policy_steer.vlm_rewards.synthesis.base.SynthesisConfig` (``--model_path``, ``--url``, ...).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from policy_steer.vlm_rewards.synthesis.annotate import PinholeCamera
from policy_steer.vlm_rewards.synthesis.base import SynthesisConfig, make_synthesizer

log = logging.getLogger(__name__)


@dataclass
class Config(SynthesisConfig):
    task: str = "push"  # the task whose scene is described: reach | push | pick-place | lift
    variant: str = "nominal"  # its variant: nominal | obstacle | shifted-surface | clutter | moving-goal
    seed: int = 0  # seed of the reset the scene is read after
    out: str | None = None  # also write the program (JSON) here
    camera: str = "front"  # VLM backends: the camera whose image goes into the prompt


def scene_and_image(
    task: str, variant: str, seed: int, camera: str | None
) -> tuple[Any, np.ndarray | None, PinholeCamera | None]:
    """The scene of ``task``/``variant`` after a reset with ``seed``, and (when ``camera``) its image."""
    from policy_steer import envs

    env = envs.make(task, variant)
    try:
        env.reset(seed=seed)
        scene = env.unwrapped.scene()
        if camera is None:
            return scene, None, None
        image = env.render()
        if image is None:
            return scene, None, None
        u = env.unwrapped
        cam = None
        if hasattr(u, "model") and hasattr(u, "data"):
            # an env may name its cameras differently from its MuJoCo model (robosuite: front -> agentview)
            names = getattr(sys.modules.get(type(u).__module__), "CAMERAS", None)
            model_name = names.get(camera, camera) if isinstance(names, dict) else camera
            try:
                cam = PinholeCamera.from_mujoco(u.model, u.data, model_name, image.shape[1], image.shape[0])
            except (KeyError, ValueError) as e:  # a camera the model lacks: send the image unannotated
                log.warning("no camera %r to draw keypoints with: %s", camera, e)
        return scene, image, cam
    finally:
        env.close()


def run(cfg: Config) -> int:
    synthesizer = make_synthesizer(cfg)  # first: a bad backend option fails before the simulator starts
    want_image = cfg.backend != "offline" and cfg.send_image
    scene, image, camera = scene_and_image(cfg.task, cfg.variant, cfg.seed, cfg.camera if want_image else None)
    program = synthesizer.synthesize(scene, image=image, camera=camera)  # SynthesisFailed: one error line, exit 2
    text = program.to_json()
    print(text)
    if cfg.out:
        Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.out).write_text(text + "\n")
    return 0
