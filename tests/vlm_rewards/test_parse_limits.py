"""The reward-program parser's limits (issue 14, hole 7): an answer nested 5,000 deep used to raise an
uncaught RecursionError out of the parser and the chat synthesizer; now it is a ProgramError naming the
limit, and the synthesizer asks again on that as on every other parse failure."""

from __future__ import annotations

import json

import pytest

from policy_steer.vlm_rewards import SynthesisConfig, make_synthesizer
from policy_steer.vlm_rewards.errors import ProgramError, ProgramParseError
from policy_steer.vlm_rewards.parse import MAX_ANSWER_CHARS, MAX_DEPTH, parse_json_answer
from policy_steer.vlm_rewards.program import RewardProgram
from tests.vlm_rewards.chat_server import ChatServer
from tests.vlm_rewards.scenes import push_scene
from tests.vlm_rewards.test_validation import GOOD

VALID = json.dumps(GOOD)
DEEP_ARRAY = "[" * 5000 + "]" * 5000
DEEP_OBJECT = '{"a": ' * 5000 + "1" + "}" * 5000


@pytest.mark.parametrize("text", [
    DEEP_ARRAY,
    DEEP_OBJECT,
    f"```json\n{DEEP_OBJECT}\n```",
    f"Here is the program: {DEEP_OBJECT}",
    '{"version": 1, "notes": ' + DEEP_ARRAY + "}",
], ids=["array", "object", "fenced", "after-prose", "inside-a-program"])
def test_json_nested_5000_deep_is_a_program_error_naming_the_depth(text):
    with pytest.raises(ProgramParseError) as info:
        parse_json_answer(text)
    assert f"more than {MAX_DEPTH} levels deep" in str(info.value)
    with pytest.raises(ProgramError, match=f"at most {MAX_DEPTH} levels"):
        RewardProgram.from_json(text, push_scene())


def test_nesting_up_to_the_limit_and_brackets_in_strings_are_read():
    assert parse_json_answer("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None
    text = json.dumps({"notes": "[" * 100 + '\\" {' * 100, "x": [[1]]})
    assert parse_json_answer(text)["x"] == [[1]]
    assert RewardProgram.from_json(f"Sure.\n```json\n{VALID}\n```\n", push_scene()).stages[0].name == "approach"


def test_an_answer_over_the_size_limit_is_a_program_error_naming_it():
    text = json.dumps({"notes": "x" * MAX_ANSWER_CHARS})
    with pytest.raises(ProgramParseError, match=f"at most {MAX_ANSWER_CHARS} are read"):
        parse_json_answer(text)


def _synth(server: ChatServer, reasks: int = 1):
    return make_synthesizer(SynthesisConfig(backend="openai", url=server.url, model="tiny-vlm", timeout_s=5.0,
                                            reasks=reasks))


def test_chat_synthesizer_reasks_after_deeply_nested_garbage():
    """A model answering JSON nested 5,000 deep first and a valid program second: the valid one is used."""
    with ChatServer([("answer", DEEP_ARRAY), ("answer", VALID)]) as server:
        s = _synth(server)
        program = s.synthesize(push_scene())
    assert [st.name for st in program.stages] == ["approach", "push"]
    assert (s.stats.succeeded, s.stats.reasks, s.stats.failed) == (1, 1, 0)
    reask = server.requests[1]["body"]["messages"][-1]
    text = reask["content"] if isinstance(reask["content"], str) else "".join(p.get("text", "") for p in reask["content"])
    assert f"more than {MAX_DEPTH} levels deep" in text  # the model is told what was wrong


def test_chat_synthesizer_reasks_on_every_kind_of_garbage():
    """Deep nesting, bytes that are not JSON, a body that is not the protocol, a valid program last."""
    garbage = [("answer", DEEP_OBJECT), ("answer", "\x00\xff{{{]]]\"\\"), ("raw", DEEP_ARRAY), ("answer", VALID)]
    with ChatServer(garbage) as server:
        s = _synth(server, reasks=3)
        program = s.synthesize(push_scene())
    assert program.stages[1].name == "push"
    assert (s.stats.succeeded, s.stats.reasks, s.stats.failed) == (1, 3, 0)
    assert len(server.requests) == 4


def test_chat_synthesizer_reasks_when_parsing_fails_with_anything(monkeypatch):
    """Not only ProgramError: whatever an answer makes the parser raise is answered by asking again."""
    from policy_steer.vlm_rewards.synthesis import chat

    calls = {"n": 0}
    real = chat.RewardProgram.from_json

    def flaky(text, scene=None):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RecursionError("maximum recursion depth exceeded")
        return real(text, scene)

    monkeypatch.setattr(chat.RewardProgram, "from_json", staticmethod(flaky))
    with ChatServer([("answer", VALID), ("answer", VALID)]) as server:
        s = _synth(server)
        assert s.synthesize(push_scene()).stages[0].name == "approach"
    assert (s.stats.succeeded, s.stats.reasks) == (1, 1)


def test_stage_judge_treats_deep_garbage_as_no_answer():
    scene = push_scene()
    with ChatServer([("answer", VALID), ("answer", DEEP_ARRAY)]) as server:
        s = _synth(server)
        program = s.synthesize(scene)
        assert s.judge_stage(program, 0, scene, None) is None
