"""Synthesis backends: scene + instruction (+ image) -> a validated :class:`RewardProgram`.

``offline`` (rules), ``transformers`` (a local VLM), ``openai`` (a chat-completions endpoint); build one
with :func:`make_synthesizer`. VLM backends are imported only when asked for.
"""

from policy_steer.vlm_rewards.synthesis.base import (
    BACKENDS,
    SynthesisConfig,
    SynthesisStats,
    Synthesizer,
    make_synthesizer,
)
from policy_steer.vlm_rewards.synthesis.offline import OfflineConfig, OfflineSynthesizer

__all__ = [
    "BACKENDS",
    "OfflineConfig",
    "OfflineSynthesizer",
    "SynthesisConfig",
    "SynthesisStats",
    "Synthesizer",
    "make_synthesizer",
]
