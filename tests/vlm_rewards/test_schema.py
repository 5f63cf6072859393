"""The published JSON Schema: valid, up to date with the registry, and in agreement with validation."""

from __future__ import annotations

import json

import jsonschema
import pytest
import torch

from policy_steer.vlm_rewards import SCHEMA_PATH, ProgramError, RewardProgram, compile_program, program_schema, registered_terms
from policy_steer.vlm_rewards import args as A
from policy_steer.vlm_rewards import terms as term_registry
from policy_steer.vlm_rewards.synthesis import OfflineSynthesizer
from tests.vlm_rewards.scenes import HAND_BUILT, push_scene
from tests.vlm_rewards.test_validation import CASES, GOOD


def _validator(schema=None):
    schema = json.loads(SCHEMA_PATH.read_text()) if schema is None else schema
    return jsonschema.Draft202012Validator(schema)


def test_published_schema_is_valid_and_matches_the_registry():
    published = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(published)
    assert published == program_schema(), "regenerate: python -m policy_steer.vlm_rewards.json_schema --write"


def test_every_registered_term_is_in_the_schema_with_its_arguments():
    schema = program_schema()
    refs = {ref["$ref"] for ref in schema["$defs"]["term"]["oneOf"]}
    for name, spec in registered_terms().items():
        assert f"#/$defs/term_{name}" in refs
        d = schema["$defs"][f"term_{name}"]
        assert d["properties"]["term"] == {"const": name}
        assert set(d["properties"]["args"]["properties"]) == set(spec.args)
        assert set(d["properties"]["args"]["required"]) == {k for k, a in spec.args.items() if a.required}


def test_valid_programs_pass_the_schema():
    _validator().validate(GOOD)
    synth = OfflineSynthesizer()
    for make_scene in HAND_BUILT.values():
        for variant in ("nominal", "obstacle", "clutter", "shifted-surface"):
            scene = make_scene(variant)
            program = synth.synthesize(scene)
            _validator().validate(program.to_dict())
            _validator(program_schema(scene)).validate(program.to_dict())


# Cases the schema cannot see: finiteness (JSON has no NaN), and names against a scene.
_SCENE_ONLY = {"nan in a vector", "inf weight", "keypoint not in scene", "object not in scene"}


@pytest.mark.parametrize("name,data", [(c[0], c[1]) for c in CASES if c[0] not in _SCENE_ONLY], ids=lambda v: v if isinstance(v, str) else "")
def test_schema_refuses_what_validation_refuses(name, data):
    assert not _validator().is_valid(data)


def test_scene_schema_restricts_names():
    scene = push_scene()
    bad = json.loads(json.dumps(GOOD))
    bad["stages"][1]["terms"][0]["args"]["end"] = "cube_top"
    assert _validator().is_valid(bad)
    assert not _validator(program_schema(scene)).is_valid(bad)


@pytest.fixture
def extra_term():
    """A new term registered the way a contributor would (removed again after the test)."""

    @term_registry.term(
        "stay_near_height",
        "Keep the end effector near a height: -(mean over time of (z - height)^2).",
        height=A.number("metres"),
    )
    def stay_near_height(x: term_registry.TermInput, height: float) -> torch.Tensor:
        return -((x.traj[..., 2] - height) ** 2).mean(-1)

    yield "stay_near_height"
    del term_registry._TERMS["stay_near_height"]


def test_adding_a_term_is_one_decorated_function(extra_term):
    schema = program_schema()
    assert f"term_{extra_term}" in schema["$defs"]
    data = {"stages": [{"terms": [{"term": extra_term, "args": {"height": 0.2}}]}]}
    _validator(schema).validate(data)
    scene = push_scene()
    r = compile_program(RewardProgram.from_dict(data, scene), scene)[0]
    assert r(torch.tensor([[[0.0, 0.0, 0.3]]])).item() == pytest.approx(-0.01)
    with pytest.raises(ProgramError, match=r"stages\[0\]\.terms\[0\]\.args\.height: missing"):
        RewardProgram.from_dict({"stages": [{"terms": [{"term": extra_term, "args": {}}]}]}, scene)


def test_a_term_whose_function_does_not_match_its_spec_is_refused_at_registration():
    with pytest.raises(TypeError, match="argument specs"):

        @term_registry.term("broken", "doc", height=A.number("metres"))
        def broken(x, level):  # noqa: ANN001
            return x.traj[..., 2].mean(-1)
