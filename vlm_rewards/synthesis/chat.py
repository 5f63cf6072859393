"""The ask -> parse -> validate -> re-ask loop shared by the VLM backends.

A backend only implements ``_complete(messages) -> str`` (one chat turn). The answer is parsed as JSON
data, validated against the scene and dry-run compiled; on any failure of these (a
:class:`ProgramError`, which names the place or the parser's limit, or anything else the answer makes
them raise: the answer is untrusted input) the model is re-asked with the error (``cfg.reasks`` times, 1
by default); after that :class:`SynthesisFailed` is raised and counted.
A transport failure (timeout, HTTP error) uses up an attempt the same way but is retried with the
same messages.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from typing import Any

import numpy as np

from policy_steer.scene import Scene
from policy_steer.vlm_rewards.compile import compile_program
from policy_steer.vlm_rewards.errors import ProgramError
from policy_steer.vlm_rewards.parse import parse_json_answer
from policy_steer.vlm_rewards.program import RewardProgram
from policy_steer.vlm_rewards.synthesis.annotate import PinholeCamera, annotate
from policy_steer.vlm_rewards.synthesis.base import SynthesisConfig, Synthesizer
from policy_steer.vlm_rewards.synthesis.prompt import Message, judge_messages, reask_messages, synthesis_messages

log = logging.getLogger(__name__)


class TransportError(Exception):
    """The model could not be reached or did not answer in time (not the model's fault)."""


class ChatSynthesizer(Synthesizer):
    def __init__(self, cfg: SynthesisConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.last_answers: list[str] = []  # the raw answers of the last call (for logs and debugging)

    @abstractmethod
    def _complete(self, messages: list[Message]) -> str:
        """One chat turn: the model's text answer to ``messages`` (raise TransportError when unreachable)."""

    def synthesize(
        self,
        scene: Scene,
        instruction: str | None = None,
        image: np.ndarray | None = None,
        *,
        camera: PinholeCamera | None = None,
    ) -> RewardProgram:
        self.stats.calls += 1
        self.last_answers = []
        instruction = scene.instruction if instruction is None else instruction
        picture = annotate(image, scene, camera) if (image is not None and self.cfg.send_image) else None
        messages = synthesis_messages(scene, instruction, picture, with_schema=self.cfg.schema_in_prompt)
        reasons: list[str] = []
        for attempt in range(1 + max(self.cfg.reasks, 0)):
            if attempt > 0:
                self.stats.reasks += 1
            try:
                answer = self._complete(messages)
            except TransportError as e:
                reasons.append(f"attempt {attempt + 1}: {e}")
                log.warning("%s: %s", self.name, reasons[-1])
                continue
            self.last_answers.append(answer)
            try:
                program = RewardProgram.from_json(answer, scene)
                compile_program(program, scene)
            except Exception as e:  # noqa: BLE001 - whatever an answer makes parsing fail with is re-asked
                error = _answer_error(e)
                reasons.append(f"attempt {attempt + 1}: {error}")
                log.warning("%s: invalid program: %s", self.name, error)
                messages = reask_messages(messages, answer, error)
                continue
            self.stats.succeeded += 1
            return program
        raise self._failed(reasons)

    def judge_stage(
        self,
        program: RewardProgram,
        stage_index: int,
        scene: Scene,
        image: np.ndarray | None,
        camera: PinholeCamera | None = None,
    ) -> bool | None:
        """Ask whether stage ``stage_index`` is done: True / False, or None when there is no usable answer
        (the session's rule decides then). Usable as :data:`policy_steer.vlm_rewards.session.StageJudge`."""
        picture = annotate(image, scene, camera) if (image is not None and self.cfg.send_image) else None
        try:
            answer = self._complete(judge_messages(program, stage_index, scene, picture))
        except TransportError as e:
            log.warning("%s: stage judge gave no answer: %s", self.name, e)
            return None
        try:
            verdict: Any = parse_json_answer(answer)
        except Exception as e:  # noqa: BLE001 - an unusable answer is no answer
            log.warning("%s: stage judge gave no answer: %s", self.name, _answer_error(e))
            return None
        if isinstance(verdict, dict) and isinstance(verdict.get("done"), bool):
            return verdict["done"]
        log.warning("%s: stage judge answered %r, not {\"done\": true|false}", self.name, verdict)
        return None


def _answer_error(e: BaseException) -> str:
    """The line a model is re-asked with: a ProgramError names the place; anything else its type too."""
    if isinstance(e, ProgramError):
        return str(e)
    return f"answer: not a usable program ({type(e).__name__}: {str(e)[:300]})"
