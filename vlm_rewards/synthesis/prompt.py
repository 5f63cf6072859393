"""The prompts sent to a VLM: synthesis (instruction, numbered keypoints, objects, terms, schema),
the re-ask after an invalid answer, and the stage-done question.

Messages are kept in one neutral form that each backend converts:
``[{"role": "system"|"user"|"assistant", "content": [{"type": "text", "text": str} |
{"type": "image", "image": PIL.Image}]}]``.
"""

from __future__ import annotations

import json
from typing import Any

from PIL import Image

from policy_steer.scene import Scene
from policy_steer.vlm_rewards.json_schema import program_schema
from policy_steer.vlm_rewards.program import RewardProgram
from policy_steer.vlm_rewards.synthesis.annotate import keypoint_numbers
from policy_steer.vlm_rewards.terms import registered_terms

Message = dict[str, Any]

SYSTEM = (
    "You write reward programs that steer a robot arm's end effector. A program is JSON data, never code: "
    "stages in the order the task needs them; each stage is a weighted sum of reward terms over the end "
    "effector's planned trajectory, and an exit condition. Refer to points only by the keypoint and object "
    "names given. Answer with one JSON object and nothing else."
)

EXAMPLE = {
    "version": 1,
    "task": "push",
    "instruction": "push the block to the target",
    "stages": [
        {
            "name": "approach",
            "terms": [
                {"term": "reach", "weight": 1.0, "args": {"point": "block", "offset": [-0.05, 0.0, 0.0]}},
                {"term": "stay_clear", "weight": 50.0, "args": {"object": "block", "margin": 0.02}},
                {"term": "stay_above", "weight": 50.0, "args": {"margin": 0.015}},
            ],
            "exit": {"when": "progress", "threshold": 0.8},
        },
        {
            "name": "push",
            "terms": [
                {"term": "move_along", "weight": 1.0, "args": {"start": "block", "end": "target", "planar": True}},
                {"term": "no_backtrack", "weight": 10.0, "args": {"start": "block", "end": "target"}},
            ],
            "exit": {"when": "never"},
        },
    ],
}


def _fmt(v: list[float]) -> str:
    return "[" + ", ".join(f"{x:.3f}" for x in v) + "]"


def describe_scene(scene: Scene) -> str:
    lines = ["Keypoints (numbered as drawn on the image; world frame, metres):"]
    for name, num in keypoint_numbers(scene).items():
        lines.append(f"  {num}. {name} {_fmt(scene.keypoints[name])}")
    lines.append("Objects (name: kind, shape, centre, half sizes):")
    for o in scene.objects:
        lines.append(f"  {o.name}: {o.kind}, {o.shape}, centre {_fmt(o.position)}, half {_fmt(o.half_size)}")
    lines.append(f"Table top height: {scene.surface_height:.3f}")
    lines.append(f"Workspace box: low {_fmt(scene.workspace_low)}, high {_fmt(scene.workspace_high)}")
    lines.append(f"End effector now: {_fmt(scene.ee_position)}; gripper opening {scene.gripper_opening:.2f} (0 closed, 1 open)")
    return "\n".join(lines)


def describe_terms() -> str:
    lines = ["Terms (name(arguments): meaning):"]
    for name, spec in registered_terms().items():
        parts = []
        for k, a in spec.args.items():
            parts.append(k if a.required else f"{k}={json.dumps(list(a.default) if isinstance(a.default, tuple) else a.default)}")
        lines.append(f"  {name}({', '.join(parts)}): {spec.doc}")
    lines.append(
        "Exit conditions: {\"when\": \"progress\", \"threshold\": 0.8} (the stage's goal terms are 80% done), "
        "{\"when\": \"gripper\", \"event\": \"close\"|\"open\"}, {\"when\": \"never\"} (last stage)."
    )
    return "\n".join(lines)


def synthesis_messages(
    scene: Scene, instruction: str, image: Image.Image | None, *, with_schema: bool = True
) -> list[Message]:
    text = [
        f"Instruction: {instruction}",
        describe_scene(scene),
        describe_terms(),
    ]
    if with_schema:
        text.append("JSON Schema of the answer:\n" + json.dumps(program_schema(scene), separators=(",", ":")))
    text.append("Example answer (for another scene):\n" + json.dumps(EXAMPLE, separators=(",", ":")))
    text.append("Write the reward program for this scene and instruction. Answer with the JSON object only.")
    content: list[dict[str, Any]] = []
    if image is not None:
        content.append({"type": "image", "image": image})
    content.append({"type": "text", "text": "\n\n".join(text)})
    return [{"role": "system", "content": [{"type": "text", "text": SYSTEM}]}, {"role": "user", "content": content}]


def reask_messages(messages: list[Message], answer: str, error: str) -> list[Message]:
    """The conversation so far, the invalid answer, and a request to fix it."""
    return [
        *messages,
        {"role": "assistant", "content": [{"type": "text", "text": answer}]},
        {
            "role": "user",
            "content": [
                {
                    "type": "text",
                    "text": f"That answer is not a valid reward program:\n{error}\n"
                    "Answer again with the corrected JSON object only.",
                }
            ],
        },
    ]


def judge_messages(program: RewardProgram, stage_index: int, scene: Scene, image: Image.Image | None) -> list[Message]:
    stage = program.stages[stage_index]
    text = (
        f"Instruction: {program.instruction or scene.instruction}\n"
        f"The robot is in stage {stage_index} ({stage.name!r}) of this reward program:\n"
        f"{json.dumps(stage.to_dict(), separators=(',', ':'))}\n\n{describe_scene(scene)}\n\n"
        'Is this stage complete? Answer with JSON only: {"done": true} or {"done": false}.'
    )
    content: list[dict[str, Any]] = []
    if image is not None:
        content.append({"type": "image", "image": image})
    content.append({"type": "text", "text": text})
    return [{"role": "system", "content": [{"type": "text", "text": SYSTEM}]}, {"role": "user", "content": content}]


def merge_system(messages: list[Message]) -> list[Message]:
    """For chat templates without a system role: the system text goes in front of the first user turn."""
    if not messages or messages[0]["role"] != "system":
        return messages
    system_text = "\n".join(c["text"] for c in messages[0]["content"] if c["type"] == "text")
    rest = [dict(m) for m in messages[1:]]
    for m in rest:
        if m["role"] == "user":
            m["content"] = [{"type": "text", "text": system_text}, *m["content"]]
            break
    return rest
