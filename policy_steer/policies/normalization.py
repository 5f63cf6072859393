"""Differentiable action (un)normalisation from a lerobot policy's own processor statistics.

lerobot keeps normalisation in processor pipelines. Guidance needs actions in output units *with*
gradients, so instead of running the whole post-processor we call the same transform its
``UnnormalizerProcessorStep`` applies (same statistics, same mode); a test checks that both agree.
"""

from __future__ import annotations

from torch import Tensor

from policy_steer.errors import CheckpointError


class ActionNormalizer:
    def __init__(self, postprocessor) -> None:
        from lerobot.processor.normalize_processor import UnnormalizerProcessorStep

        steps = [s for s in postprocessor.steps if isinstance(s, UnnormalizerProcessorStep)]
        if len(steps) != 1:
            raise CheckpointError(
                f"expected one UnnormalizerProcessorStep in the policy's postprocessor, found {len(steps)}"
            )
        self._step = steps[0]

    def unnormalize(self, x: Tensor) -> Tensor:
        """Normalised [..., A] -> output units [..., A]."""
        return self._step._normalize_action(x, inverse=True)

    def normalize(self, a: Tensor) -> Tensor:
        """Output units [..., A] -> normalised [..., A]."""
        return self._step._normalize_action(a, inverse=False)
