"""The JSON Schema (draft 2020-12) of reward programs, generated from the term registry.

The published file ``vlm_rewards/schema/reward_program.schema.json`` is this function's output
(a test checks they agree). Regenerate it after adding a term::

    python -m policy_steer.vlm_rewards.json_schema --write

With a scene, :func:`program_schema` restricts names to the scene's keypoints and objects (the form put
into prompts). Validation (:mod:`policy_steer.vlm_rewards.validate`) checks the same rules and more
(finite numbers, names in the scene) and names the place of each problem; the schema is for tools
and models.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from policy_steer.scene import Scene
from policy_steer.vlm_rewards.program import PROGRAM_VERSION
from policy_steer.vlm_rewards.terms import registered_terms
from policy_steer.vlm_rewards.validate import MAX_STAGES, MAX_TERMS

SCHEMA_PATH = Path(__file__).parent / "schema" / "reward_program.schema.json"
SCHEMA_ID = "https://policy-steer.local/schemas/reward_program.schema.json"


def program_schema(scene: Scene | None = None) -> dict[str, Any]:
    terms = registered_terms()
    defs: dict[str, Any] = {}
    for name, spec in terms.items():
        required = [k for k, a in spec.args.items() if a.required]
        args_schema = {
            "type": "object",
            "properties": {k: a.schema(scene) for k, a in spec.args.items()},
            "required": required,
            "additionalProperties": False,
        }
        defs[f"term_{name}"] = {
            "type": "object",
            "description": spec.doc,
            "properties": {
                "term": {"const": name},
                "weight": {"type": "number", "minimum": 0, "default": 1.0},
                "args": args_schema,
            },
            "required": ["term", "args"] if required else ["term"],
            "additionalProperties": False,
        }
    defs["term"] = {"oneOf": [{"$ref": f"#/$defs/term_{n}"} for n in terms]}
    defs["exit"] = {
        "description": "when the session moves on to the next stage",
        "oneOf": [
            {
                "type": "object",
                "properties": {
                    "when": {"const": "progress"},
                    "threshold": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 0.8},
                    "revisit": {
                        "type": "boolean", "default": True,
                        "description": "false: once passed, the session never comes back to this stage (a via point)",
                    },
                },
                "required": ["when"],
                "additionalProperties": False,
            },
            {
                "type": "object",
                "properties": {"when": {"const": "gripper"}, "event": {"enum": ["open", "close"]}},
                "required": ["when", "event"],
                "additionalProperties": False,
            },
            {
                "type": "object",
                "properties": {"when": {"const": "never"}},
                "required": ["when"],
                "additionalProperties": False,
            },
        ],
    }
    defs["stage"] = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 1},
            "terms": {"type": "array", "items": {"$ref": "#/$defs/term"}, "minItems": 1, "maxItems": MAX_TERMS},
            "exit": {"$ref": "#/$defs/exit"},
        },
        "required": ["terms"],
        "additionalProperties": False,
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "policy-steer reward program",
        "description": "Stages of weighted, differentiable reward terms over the end-effector trajectory.",
        "type": "object",
        "properties": {
            "version": {"const": PROGRAM_VERSION},
            "task": {"type": "string"},
            "instruction": {"type": "string"},
            "notes": {"type": "string"},
            "stages": {"type": "array", "items": {"$ref": "#/$defs/stage"}, "minItems": 1, "maxItems": MAX_STAGES},
        },
        "required": ["stages"],
        "additionalProperties": False,
        "$defs": defs,
    }


def schema_text() -> str:
    return json.dumps(program_schema(), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--write" in argv:
        SCHEMA_PATH.write_text(schema_text())
        print(f"wrote {SCHEMA_PATH}")
    else:
        print(schema_text(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
