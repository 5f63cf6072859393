"""The transformers backend against a tiny randomly initialised SmolVLM built and saved here: real
processor, chat template and generate. Its nonsense answer takes the re-ask and fallback path."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from policy_steer.errors import ConfigError
from policy_steer.vlm_rewards import SynthesisConfig, make_synthesizer
from policy_steer.vlm_rewards.synthesis.annotate import PinholeCamera, annotate
from policy_steer.vlm_rewards.synthesis.prompt import merge_system, synthesis_messages
from tests.vlm_rewards.scenes import push_scene
from tests.vlm_rewards.tiny_vlm import build_tiny_vlm

CAMERA = PinholeCamera((0.45, 0.0, 1.0), ((1, 0, 0), (0, 1, 0), (0, 0, 1)), 60.0, 64, 48)


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory):
    folder = build_tiny_vlm(tmp_path_factory.mktemp("tiny_smolvlm"))
    return make_synthesizer(SynthesisConfig(backend="transformers", model_path=str(folder), max_new_tokens=24))


def test_the_prompt_goes_through_the_processors_chat_template_with_the_image(tiny_vlm):
    scene = push_scene()
    image = np.zeros((48, 64, 3), dtype=np.uint8)
    messages = merge_system(synthesis_messages(scene, scene.instruction, annotate(image, scene, CAMERA)))
    inputs = tiny_vlm.processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    image_token = tiny_vlm.model.config.image_token_id
    assert "pixel_values" in inputs and (inputs["input_ids"] == image_token).sum() > 0
    text = tiny_vlm.processor.batch_decode(inputs["input_ids"])[0]
    assert "Instruction: push the block into the target region" in text and text.endswith("Assistant:")


def test_nonsense_answer_is_reasked_then_falls_back(tiny_vlm, caplog):
    scene = push_scene()
    image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    with caplog.at_level(logging.WARNING):
        assert tiny_vlm.try_synthesize(scene, image=image, camera=CAMERA) is None  # the episode runs unsteered
    assert len(tiny_vlm.last_answers) == 2  # the model really answered twice: asked, then re-asked
    stats = tiny_vlm.stats
    assert (stats.calls, stats.reasks, stats.failed, stats.succeeded) == (1, 1, 1, 0)
    (reason,) = stats.failure_reasons
    assert reason.startswith("attempt 1: ") and " | attempt 2: " in reason
    assert "invalid program" in caplog.text and "runs unsteered" in caplog.text


def test_stage_judge_without_a_usable_answer_returns_none(tiny_vlm):
    from policy_steer.vlm_rewards.synthesis import OfflineSynthesizer

    scene = push_scene()
    program = OfflineSynthesizer().synthesize(scene)
    assert tiny_vlm.judge_stage(program, 0, scene, None) is None


def test_bad_model_folders_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="local model folder"):
        make_synthesizer(SynthesisConfig(backend="transformers", model_path=str(tmp_path / "missing")))
    with pytest.raises(ConfigError, match="cannot load"):
        make_synthesizer(SynthesisConfig(backend="transformers", model_path=str(tmp_path)))
