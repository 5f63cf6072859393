"""The OpenAI-compatible backend against a local chat-completions server (a real socket)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from policy_steer.errors import ConfigError
from policy_steer.vlm_rewards import RewardSession, SwitchConfig, SynthesisConfig, SynthesisFailed, make_synthesizer
from policy_steer.vlm_rewards.synthesis.annotate import PinholeCamera
from tests.vlm_rewards.chat_server import ChatServer
from tests.vlm_rewards.scenes import push_scene
from tests.vlm_rewards.test_validation import GOOD

VALID = json.dumps(GOOD)
INVALID = json.dumps({"stages": [{"terms": [{"term": "reach", "args": {"point": "cube_top"}}]}]})


def synth(server: ChatServer, **kw):
    cfg = SynthesisConfig(backend="openai", url=server.url, model="tiny-vlm", api_key="sk-test", timeout_s=kw.pop("timeout_s", 5.0), **kw)
    return make_synthesizer(cfg)


def _texts(message: dict) -> str:
    content = message["content"]
    return content if isinstance(content, str) else "".join(p.get("text", "") for p in content)


def test_valid_answer_with_the_image_and_the_protocol():
    scene = push_scene()
    image = np.full((48, 64, 3), 128, dtype=np.uint8)
    camera = PinholeCamera((0.45, 0.0, 1.0), ((1, 0, 0), (0, 1, 0), (0, 0, 1)), 60.0, 64, 48)
    with ChatServer([("answer", VALID)]) as server:
        s = synth(server)
        program = s.synthesize(scene, image=image, camera=camera)
    assert [st.name for st in program.stages] == ["approach", "push"]
    assert s.stats.as_dict() | {"failure_reasons": []} == {"calls": 1, "succeeded": 1, "reasks": 0, "failed": 0, "failure_reasons": []}
    (req,) = server.requests
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"]["Authorization"] == "Bearer sk-test"
    body = req["body"]
    assert body["model"] == "tiny-vlm" and body["temperature"] == 0.0
    user = body["messages"][-1]
    text = _texts(user)
    assert "Instruction: push the block into the target region" in text
    assert "1. ee" in text and "3. block_push_face" in text  # the numbered keypoint list
    assert '"$schema"' in text  # the schema
    images = [p for p in user["content"] if p["type"] == "image_url"]
    assert len(images) == 1 and images[0]["image_url"]["url"].startswith("data:image/png;base64,")


def test_invalid_then_valid_is_reasked_with_the_error():
    with ChatServer([("answer", INVALID), ("answer", f"```json\n{VALID}\n```")]) as server:
        s = synth(server)
        program = s.synthesize(push_scene())
    assert program.stages[0].name == "approach"
    assert (s.stats.succeeded, s.stats.reasks, s.stats.failed) == (1, 1, 0)
    second = server.requests[1]["body"]["messages"]
    assert second[-2]["role"] == "assistant" and _texts(second[-2]) == INVALID
    assert "stages[0].terms[0].args.point: 'cube_top' is not in the scene" in _texts(second[-1])


def test_two_invalid_answers_fail_and_are_counted(caplog):
    with ChatServer([("answer", INVALID), ("answer", "I cannot do that.")]) as server:
        s = synth(server)
        with pytest.raises(SynthesisFailed) as info:
            s.synthesize(push_scene())
        assert len(info.value.reasons) == 2
        assert "cube_top" in info.value.reasons[0] and "no JSON object" in info.value.reasons[1]
        server.replies += [("answer", "nope"), ("answer", "still nope")]
        with caplog.at_level(logging.WARNING):
            assert s.try_synthesize(push_scene()) is None
    assert (s.stats.calls, s.stats.failed, s.stats.reasks) == (2, 2, 2)
    assert len(s.stats.failure_reasons) == 2
    assert "runs unsteered" in caplog.text


def test_timeout_then_valid():
    with ChatServer([("slow", 1.5, VALID), ("answer", VALID)]) as server:
        s = synth(server, timeout_s=0.3)
        program = s.synthesize(push_scene())
    assert program.stages[1].name == "push"
    assert (s.stats.succeeded, s.stats.reasks) == (1, 1)


def test_http_errors_fail_with_the_status():
    with ChatServer([("status", 500), ("status", 500)]) as server:
        s = synth(server)
        with pytest.raises(SynthesisFailed, match="HTTP 500"):
            s.synthesize(push_scene())


def test_endpoint_from_the_environment(monkeypatch):
    with ChatServer([("answer", VALID)]) as server:
        monkeypatch.setenv("POLICY_STEER_VLM_URL", server.url + "/chat/completions")
        monkeypatch.setenv("POLICY_STEER_VLM_MODEL", "env-model")
        monkeypatch.delenv("POLICY_STEER_VLM_API_KEY", raising=False)
        s = make_synthesizer(SynthesisConfig(backend="openai"))
        s.synthesize(push_scene())
    req = server.requests[0]
    assert req["body"]["model"] == "env-model" and "Authorization" not in req["headers"]


def test_missing_endpoint_is_a_config_error(monkeypatch):
    monkeypatch.delenv("POLICY_STEER_VLM_URL", raising=False)
    with pytest.raises(ConfigError, match="POLICY_STEER_VLM_URL"):
        make_synthesizer(SynthesisConfig(backend="openai", model="m"))


def test_the_vlm_can_judge_stage_switches():
    scene = push_scene()
    replies = [("answer", VALID), ("answer", '{"done": true}'), ("answer", "maybe?")]
    with ChatServer(replies) as server:
        s = synth(server)
        program = s.synthesize(scene)
        assert s.judge_stage(program, 0, scene, None) is True
        assert s.judge_stage(program, 0, scene, None) is None  # no usable answer: the rule decides
        server.replies.append(("answer", '```json\n{"done": true}\n```'))
        session = RewardSession(program, scene, SwitchConfig(switching="vlm", judge_every=1), judge=s.judge_stage)
        assert session.update(scene) == 1  # the VLM says done although progress is 0
        assert session.events[-1]["why"] == "vlm judge"
    assert "Is this stage complete?" in _texts(server.requests[-1]["body"]["messages"][-1])
