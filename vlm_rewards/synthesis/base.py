"""The synthesis interface every backend implements, its configuration and its failure counts.

``synthesize(scene, instruction, image) -> RewardProgram`` returns a program validated (and
dry-run compiled) against ``scene``, or raises :class:`SynthesisFailed`. :meth:`Synthesizer.try_synthesize`
is the form a benchmark uses: ``None`` on failure (the episode then runs unsteered), with the reason
logged and counted in ``stats``.
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from policy_steer.scene import Scene
from policy_steer.vlm_rewards.errors import SynthesisFailed
from policy_steer.vlm_rewards.program import RewardProgram

if TYPE_CHECKING:
    from policy_steer.vlm_rewards.synthesis.annotate import PinholeCamera

log = logging.getLogger(__name__)

BACKENDS: tuple[str, ...] = ("offline", "transformers", "openai")
ENV_URL = "POLICY_STEER_VLM_URL"
ENV_MODEL = "POLICY_STEER_VLM_MODEL"
ENV_API_KEY = "POLICY_STEER_VLM_API_KEY"


@dataclass
class SynthesisConfig:
    backend: str = "offline"  # offline, transformers, openai
    reasks: int = 1  # VLM backends: how often a failed answer is re-asked with its error
    send_image: bool = True  # VLM backends: put the (annotated) image into the prompt
    schema_in_prompt: bool = True  # VLM backends: put the JSON Schema into the prompt
    # transformers: a local folder with a processor (chat template) and an image-text-to-text model
    model_path: str | None = None
    device: str = "cpu"  # transformers: torch device of the model
    dtype: str = "auto"  # auto, float32, bfloat16, float16
    max_new_tokens: int = 1024  # VLM backends: the longest answer
    # openai: an OpenAI-compatible chat-completions endpoint; empty fields are read from the environment
    url: str | None = None  # e.g. http://localhost:8000/v1 (POLICY_STEER_VLM_URL)
    model: str | None = None  # POLICY_STEER_VLM_MODEL
    api_key: str | None = None  # POLICY_STEER_VLM_API_KEY
    timeout_s: float = 60.0  # openai: deadline of one request, seconds
    temperature: float = 0.0  # VLM backends: sampling temperature (0: greedy)

    def resolved(self) -> "SynthesisConfig":
        """A copy with ``url``, ``model`` and ``api_key`` filled from the environment where empty."""
        d = asdict(self)
        d["url"] = self.url or os.environ.get(ENV_URL) or None
        d["model"] = self.model or os.environ.get(ENV_MODEL) or None
        d["api_key"] = self.api_key or os.environ.get(ENV_API_KEY) or None
        return SynthesisConfig(**d)


@dataclass
class SynthesisStats:
    """Counts over a synthesizer's life (a benchmark reports them per cell)."""

    calls: int = 0
    succeeded: int = 0
    reasks: int = 0  # answers that were re-asked with their error
    failed: int = 0  # calls that ended in SynthesisFailed (episode unsteered)
    failure_reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Synthesizer(ABC):
    name: str = "synthesizer"

    def __init__(self) -> None:
        self.stats = SynthesisStats()

    @abstractmethod
    def synthesize(
        self,
        scene: Scene,
        instruction: str | None = None,
        image: np.ndarray | None = None,
        *,
        camera: "PinholeCamera | None" = None,
    ) -> RewardProgram:
        """A program for ``scene`` and ``instruction`` (default: the scene's), or :class:`SynthesisFailed`.

        image: uint8 [H, W, 3] of the scene, or None; camera: how it was taken, to draw the keypoints
        on it (without one the image goes unannotated).
        """

    def try_synthesize(
        self,
        scene: Scene,
        instruction: str | None = None,
        image: np.ndarray | None = None,
        *,
        camera: "PinholeCamera | None" = None,
    ) -> RewardProgram | None:
        """As :meth:`synthesize`, but ``None`` on failure (logged; counted in ``stats``)."""
        try:
            return self.synthesize(scene, instruction, image, camera=camera)
        except SynthesisFailed as e:
            log.warning("reward synthesis failed, the episode runs unsteered: %s", e)
            return None

    def _failed(self, reasons: list[str]) -> SynthesisFailed:
        self.stats.failed += 1
        self.stats.failure_reasons.append(" | ".join(reasons))
        return SynthesisFailed(self.name, reasons)


def make_synthesizer(cfg: SynthesisConfig) -> Synthesizer:
    """The backend ``cfg.backend`` (its model is loaded here, once)."""
    from policy_steer.errors import ConfigError

    if cfg.backend == "offline":
        from policy_steer.vlm_rewards.synthesis.offline import OfflineSynthesizer

        return OfflineSynthesizer()
    if cfg.backend == "transformers":
        from policy_steer.vlm_rewards.synthesis.hf_local import TransformersSynthesizer

        return TransformersSynthesizer(cfg)
    if cfg.backend == "openai":
        from policy_steer.vlm_rewards.synthesis.openai_compat import OpenAISynthesizer

        return OpenAISynthesizer(cfg)
    raise ConfigError(f"unknown synthesis backend {cfg.backend!r}; use one of {list(BACKENDS)}")
