"""Validation before use: every bad program is refused with an error that names the place."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest

from policy_steer.errors import ValidationError
from policy_steer.vlm_rewards import ProgramError, ProgramParseError, RewardProgram, compile_program
from policy_steer.vlm_rewards.parse import parse_json_answer
from tests.vlm_rewards.scenes import push_scene

GOOD = {
    "version": 1,
    "task": "push",
    "stages": [
        {
            "name": "approach",
            "terms": [
                {"term": "reach", "weight": 1.0, "args": {"point": "block_push_face", "offset": [-0.02, 0, 0]}},
                {"term": "stay_clear", "weight": 50, "args": {"object": "block", "margin": 0.02}},
            ],
            "exit": {"when": "progress", "threshold": 0.8},
        },
        {
            "name": "push",
            "terms": [{"term": "move_along", "args": {"start": "block", "end": "target", "planar": True}}],
            "exit": {"when": "never"},
        },
    ],
}


def _with(path: list, value, base=GOOD):
    d = copy.deepcopy(base)
    cur = d
    for key in path[:-1]:
        cur = cur[key]
    if value is _DELETE:
        del cur[path[-1]]
    else:
        cur[path[-1]] = value
    return d


_DELETE = object()

CASES = [
    # (name, data, place, words in the message)
    ("unknown term", _with(["stages", 1, "terms", 0, "term"], "teleport"), "stages[1].terms[0].term", "unknown term 'teleport'"),
    ("missing term name", _with(["stages", 0, "terms", 1, "term"], _DELETE), "stages[0].terms[1].term", "missing"),
    ("unknown argument", _with(["stages", 0, "terms", 0, "args", "speed"], 3), "stages[0].terms[0].args.speed", "unknown argument"),
    ("missing argument", _with(["stages", 0, "terms", 0, "args", "point"], _DELETE), "stages[0].terms[0].args.point", "missing"),
    ("wrong type: number as string", _with(["stages", 0, "terms", 1, "args", "margin"], "0.02"), "stages[0].terms[1].args.margin", "expected a number"),
    ("wrong type: bool as number", _with(["stages", 0, "terms", 1, "args", "margin"], True), "stages[0].terms[1].args.margin", "expected a number"),
    ("wrong type: vec3 length", _with(["stages", 0, "terms", 0, "args", "offset"], [0, 0]), "stages[0].terms[0].args.offset", "3 numbers"),
    ("wrong type: flag", _with(["stages", 1, "terms", 0, "args", "planar"], "yes"), "stages[1].terms[0].args.planar", "true or false"),
    ("out of range", _with(["stages", 0, "terms", 1, "args", "margin"], -0.1), "stages[0].terms[1].args.margin", ">= 0"),
    ("bad choice", _with(["stages", 0, "terms", 1, "args", "shape"], "torus"), "stages[0].terms[1].args.shape", "not one of"),
    ("nan in a vector", _with(["stages", 0, "terms", 0, "args", "offset"], [0, math.nan, 0]), "stages[0].terms[0].args.offset", "not a finite number"),
    ("inf weight", _with(["stages", 0, "terms", 1, "weight"], math.inf), "stages[0].terms[1].weight", "not a finite number"),
    ("negative weight", _with(["stages", 0, "terms", 1, "weight"], -1), "stages[0].terms[1].weight", "negative"),
    ("keypoint not in scene", _with(["stages", 1, "terms", 0, "args", "end"], "cube_top"), "stages[1].terms[0].args.end", "'cube_top' is not in the scene (have: "),
    ("object not in scene", _with(["stages", 0, "terms", 1, "args", "object"], "block_push_face"), "stages[0].terms[1].args.object", "not an object in the scene"),
    ("empty program", {"stages": []}, "stages", "empty"),
    ("no stages", {"task": "push"}, "stages", "missing"),
    ("stage without terms", _with(["stages", 1, "terms"], []), "stages[1].terms", "empty"),
    ("program not an object", [GOOD], "program", "expected a JSON object"),
    ("term not an object", _with(["stages", 0, "terms", 0], "reach block"), "stages[0].terms[0]", "expected an object"),
    ("unknown top-level key", _with(["code"], "import os"), "code", "unknown key"),
    ("bad exit", _with(["stages", 0, "exit"], {"when": "gripper", "event": "squeeze"}), "stages[0].exit.event", "'open' or 'close'"),
    ("bad threshold", _with(["stages", 0, "exit"], {"when": "progress", "threshold": 1.5}), "stages[0].exit.threshold", "(0, 1]"),
    ("bad version", _with(["version"], 2), "version", "not supported"),
]


@pytest.mark.parametrize("name,data,place,words", CASES, ids=[c[0] for c in CASES])
def test_each_error_names_its_place(name, data, place, words):
    with pytest.raises(ProgramError) as info:
        RewardProgram.from_dict(data, push_scene())
    err = info.value
    assert isinstance(err, ValidationError)
    assert any(p == place and words in m for p, m in err.problems), err.problems
    assert f"{place}: " in str(err)


def test_good_program_validates_and_fills_defaults():
    p = RewardProgram.from_dict(GOOD, push_scene())
    assert [s.name for s in p.stages] == ["approach", "push"]
    reach = p.stages[0].terms[0]
    assert reach.args["late_fraction"] == 0.3 and reach.args["late_weight"] == 3.0
    # round trip through JSON gives the same program
    assert RewardProgram.from_json(p.to_json(), push_scene()) == p


def test_all_problems_are_reported_together():
    bad = _with(["stages", 0, "terms", 0, "args", "point"], "nowhere")
    bad = _with(["stages", 1, "terms", 0, "term"], "fly", bad)
    with pytest.raises(ProgramError) as info:
        RewardProgram.from_dict(bad, push_scene())
    places = [p for p, _ in info.value.problems]
    assert places == ["stages[0].terms[0].args.point", "stages[1].terms[0].term"]


def test_names_are_checked_only_with_a_scene_and_again_at_compile():
    data = _with(["stages", 1, "terms", 0, "args", "end"], "elsewhere")
    program = RewardProgram.from_dict(data)  # structure only
    with pytest.raises(ProgramError, match=r"stages\[1\]\.terms\[0\]\.args\.end: 'elsewhere' is not in the scene"):
        compile_program(program, push_scene())


def test_scene_dependent_problems_are_caught_at_compile_with_the_place():
    data = _with(["stages", 1, "terms", 0, "args", "end"], "block")  # start == end: no axis
    program = RewardProgram.from_dict(data, push_scene())
    with pytest.raises(ProgramError, match=r"stages\[1\]\.terms\[0\]\.args: move_along: start and end coincide"):
        compile_program(program, push_scene())


# --------------------------------------------------------------------------- parsing model output


def test_fenced_json_and_prose_are_tolerated():
    text = json.dumps(GOOD)
    assert parse_json_answer(f"```json\n{text}\n```") == GOOD
    assert parse_json_answer(f"Here is the program:\n```\n{text}\n```\nGood luck.") == GOOD
    assert parse_json_answer(f"Sure! {text} That is all.") == GOOD
    assert RewardProgram.from_json(f"```json\n{text}\n```", push_scene()).stages[1].name == "push"


@pytest.mark.parametrize("answer", ["", "no idea", "{'stages': []}", "```python\nprint(1)\n```", "x" * 300_000])
def test_non_json_answers_are_parse_errors(answer):
    with pytest.raises(ProgramParseError) as info:
        RewardProgram.from_json(answer, push_scene())
    assert info.value.problems[0][0] == "answer"


def test_model_output_is_never_executed(tmp_path: Path):
    marker = tmp_path / "pwned"
    payloads = [
        f"__import__('os').system('touch {marker}')",
        f"```python\nimport os; os.system('touch {marker}')\n```",
        json.dumps(_with(["stages", 0, "terms", 0, "term"], f"__import__('os').system('touch {marker}')")),
        json.dumps(_with(["stages", 0, "terms", 0, "args", "point"], f"exec('open(\"{marker}\", \"w\")')")),
    ]
    for text in payloads:
        with pytest.raises(ProgramError):
            RewardProgram.from_json(text, push_scene())
    assert not marker.exists()


def test_the_documented_examples_are_valid_programs():
    import re

    from policy_steer.vlm_rewards import program as program_module
    from policy_steer.vlm_rewards.synthesis.prompt import EXAMPLE

    RewardProgram.from_dict(EXAMPLE, push_scene())
    doc = program_module.__doc__
    example = doc[doc.index("{") : doc.index("A stage's")]
    RewardProgram.from_json(re.sub(r"\s+", " ", example), push_scene())
