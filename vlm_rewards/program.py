"""Reward programs: stages of weighted terms, as typed data that round-trips through JSON.

Example (the JSON a model writes; the schema is ``vlm_rewards/schema/reward_program.schema.json``)::

    {"version": 1, "task": "push", "instruction": "push the block to the target",
     "stages": [
       {"name": "approach",
        "terms": [{"term": "reach", "weight": 1.0, "args": {"point": "block", "offset": [-0.05, 0, 0]}},
                  {"term": "stay_clear", "weight": 100.0, "args": {"object": "block", "margin": 0.02}}],
        "exit": {"when": "progress", "threshold": 0.8}},
       {"name": "push",
        "terms": [{"term": "move_along", "args": {"start": "block", "end": "target", "planar": true}}],
        "exit": {"when": "never"}}]}

A stage's ``exit`` says when the session moves on: ``progress`` (the stage's normalised progress on
the observed state reaches ``threshold``; ``"revisit": false`` for a via point the session must not
go back to), ``gripper`` (an ``open`` or ``close`` event), or ``never``.
Build programs with :meth:`RewardProgram.from_dict` / :meth:`RewardProgram.from_json`, which validate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from policy_steer.scene import Scene

PROGRAM_VERSION = 1
ExitWhen = Literal["progress", "gripper", "never"]
GripperEvent = Literal["open", "close"]


@dataclass(frozen=True)
class Term:
    term: str  # registered term name
    args: dict[str, Any] = field(default_factory=dict)  # validated; defaults filled in
    weight: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return {"term": self.term, "weight": self.weight, "args": {k: v for k, v in self.args.items() if v is not None}}


@dataclass(frozen=True)
class ExitCondition:
    when: ExitWhen = "progress"
    threshold: float = 0.8  # progress: switch up at this normalised progress
    event: GripperEvent | None = None  # gripper: the event that ends the stage
    revisit: bool = True  # progress: False -> never go back to this stage once passed (a via point)

    def to_dict(self) -> dict[str, Any]:
        if self.when == "progress":
            d: dict[str, Any] = {"when": "progress", "threshold": self.threshold}
            if not self.revisit:
                d["revisit"] = False
            return d
        if self.when == "gripper":
            return {"when": "gripper", "event": self.event}
        return {"when": "never"}


@dataclass(frozen=True)
class Stage:
    name: str
    terms: tuple[Term, ...]
    exit: ExitCondition = ExitCondition()

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "terms": [t.to_dict() for t in self.terms], "exit": self.exit.to_dict()}


@dataclass(frozen=True)
class RewardProgram:
    stages: tuple[Stage, ...]
    task: str = ""
    instruction: str = ""
    notes: str = ""
    version: int = PROGRAM_VERSION

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"version": self.version, "task": self.task, "instruction": self.instruction}
        if self.notes:
            d["notes"] = self.notes
        d["stages"] = [s.to_dict() for s in self.stages]
        return d

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Any, scene: "Scene | None" = None) -> "RewardProgram":
        """Validate plain data (a parsed JSON object); with ``scene``, names are checked against it.

        Raises :class:`~policy_steer.vlm_rewards.errors.ProgramError` naming every problem's place.
        """
        from policy_steer.vlm_rewards.validate import validate_program

        return validate_program(data, scene)

    @classmethod
    def from_json(cls, text: str, scene: "Scene | None" = None) -> "RewardProgram":
        """Parse a JSON text (a model's answer: a ```json fenced block is accepted) and validate it."""
        from policy_steer.vlm_rewards.parse import parse_json_answer
        from policy_steer.vlm_rewards.validate import validate_program

        return validate_program(parse_json_answer(text), scene)
