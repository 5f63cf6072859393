"""Validation of reward programs before use: structure, terms, arguments, and names against a scene.

Every problem is collected with its place (``stages[1].terms[0].args.point``) and raised together as
one :class:`~policy_steer.vlm_rewards.errors.ProgramError`, so a model that is re-asked sees all of them.
"""

from __future__ import annotations

import math
from typing import Any

from policy_steer.scene import Scene
from policy_steer.vlm_rewards.errors import ProgramError
from policy_steer.vlm_rewards.program import PROGRAM_VERSION, ExitCondition, RewardProgram, Stage, Term
from policy_steer.vlm_rewards.terms import registered_terms

MAX_STAGES = 8
MAX_TERMS = 32
_TOP_KEYS = ("version", "task", "instruction", "notes", "stages")
_STAGE_KEYS = ("name", "terms", "exit")
_TERM_KEYS = ("term", "weight", "args")


class _Problems:
    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, path: str, message: str) -> None:
        self.items.append((path, message))


def validate_program(data: Any, scene: Scene | None = None) -> RewardProgram:
    """Plain data -> :class:`RewardProgram` (defaults filled in), or :class:`ProgramError`.

    With ``scene``, every keypoint and object name must exist in it.
    """
    problems = _Problems()
    if not isinstance(data, dict):
        raise ProgramError.at("program", f"expected a JSON object, got {type(data).__name__}")
    _unknown_keys(data, _TOP_KEYS, "", problems)
    version = data.get("version", PROGRAM_VERSION)
    if version != PROGRAM_VERSION or isinstance(version, bool):
        problems.add("version", f"{version!r} is not supported (this is version {PROGRAM_VERSION})")
    texts = {}
    for key in ("task", "instruction", "notes"):
        value = data.get(key, "")
        if not isinstance(value, str):
            problems.add(key, f"expected a string, got {type(value).__name__}")
            value = ""
        texts[key] = value
    stages_data = data.get("stages")
    stages: list[Stage] = []
    if "stages" not in data:
        problems.add("stages", "missing; a program needs at least one stage")
    elif not isinstance(stages_data, list):
        problems.add("stages", f"expected a list of stages, got {type(stages_data).__name__}")
    elif not stages_data:
        problems.add("stages", "empty; a program needs at least one stage")
    elif len(stages_data) > MAX_STAGES:
        problems.add("stages", f"{len(stages_data)} stages; at most {MAX_STAGES}")
    else:
        for i, s in enumerate(stages_data):
            stage = _stage(s, f"stages[{i}]", i, scene, problems)
            if stage is not None:
                stages.append(stage)
    if problems.items:
        raise ProgramError(problems.items)
    return RewardProgram(stages=tuple(stages), task=texts["task"], instruction=texts["instruction"], notes=texts["notes"])


def _stage(data: Any, path: str, index: int, scene: Scene | None, problems: _Problems) -> Stage | None:
    if not isinstance(data, dict):
        problems.add(path, f"expected an object, got {type(data).__name__}")
        return None
    _unknown_keys(data, _STAGE_KEYS, path, problems)
    name = data.get("name", f"stage{index}")
    if not isinstance(name, str) or not name:
        problems.add(f"{path}.name", f"expected a non-empty string, got {name!r}")
        name = f"stage{index}"
    terms_data = data.get("terms")
    terms: list[Term] = []
    n_before = len(problems.items)
    if not isinstance(terms_data, list):
        problems.add(f"{path}.terms", "missing" if terms_data is None else f"expected a list, got {type(terms_data).__name__}")
    elif not terms_data:
        problems.add(f"{path}.terms", "empty; a stage needs at least one term")
    elif len(terms_data) > MAX_TERMS:
        problems.add(f"{path}.terms", f"{len(terms_data)} terms; at most {MAX_TERMS}")
    else:
        for j, t in enumerate(terms_data):
            term = _term(t, f"{path}.terms[{j}]", scene, problems)
            if term is not None:
                terms.append(term)
    exit_ = _exit(data.get("exit"), f"{path}.exit", problems)
    if len(problems.items) > n_before or exit_ is None:
        return None
    return Stage(name=name, terms=tuple(terms), exit=exit_)


def _term(data: Any, path: str, scene: Scene | None, problems: _Problems) -> Term | None:
    if not isinstance(data, dict):
        problems.add(path, f"expected an object with 'term', 'weight' and 'args', got {type(data).__name__}")
        return None
    _unknown_keys(data, _TERM_KEYS, path, problems)
    name = data.get("term")
    terms = registered_terms()
    if name is None:
        problems.add(f"{path}.term", f"missing (one of: {', '.join(terms)})")
        return None
    if not isinstance(name, str) or name not in terms:
        problems.add(f"{path}.term", f"unknown term {name!r} (known: {', '.join(terms)})")
        return None
    spec = terms[name]
    ok = True
    weight = data.get("weight", 1.0)
    if not isinstance(weight, (int, float)) or isinstance(weight, bool):
        problems.add(f"{path}.weight", f"expected a number, got {type(weight).__name__}")
        ok = False
    elif not math.isfinite(weight):
        problems.add(f"{path}.weight", f"{weight} is not a finite number")
        ok = False
    elif weight < 0:
        problems.add(f"{path}.weight", f"{weight} is negative; weights are >= 0 (the term says which way is better)")
        ok = False
    args_data = data.get("args", {})
    if not isinstance(args_data, dict):
        problems.add(f"{path}.args", f"expected an object, got {type(args_data).__name__}")
        return None
    values: dict[str, Any] = {}
    for key in args_data:
        if key not in spec.args:
            problems.add(f"{path}.args.{key}", f"unknown argument of {name!r} (accepts: {', '.join(spec.args)})")
            ok = False
    for key, arg in spec.args.items():
        if key not in args_data:
            if arg.required:
                problems.add(f"{path}.args.{key}", f"missing (required by {name!r}: {arg.doc})")
                ok = False
            else:
                values[key] = list(arg.default) if isinstance(arg.default, tuple) else arg.default
            continue
        value, problem = arg.check(args_data[key], scene)
        if problem is not None:
            problems.add(f"{path}.args.{key}", problem)
            ok = False
        values[key] = value
    return Term(term=name, args=values, weight=float(weight)) if ok else None


def _exit(data: Any, path: str, problems: _Problems) -> ExitCondition | None:
    if data is None:
        return ExitCondition()
    if not isinstance(data, dict):
        problems.add(path, f"expected an object, got {type(data).__name__}")
        return None
    when = data.get("when", "progress")
    if when == "progress":
        _unknown_keys(data, ("when", "threshold", "revisit"), path, problems)
        thr = data.get("threshold", 0.8)
        if not isinstance(thr, (int, float)) or isinstance(thr, bool) or not math.isfinite(thr) or not 0 < thr <= 1:
            problems.add(f"{path}.threshold", f"expected a finite number in (0, 1], got {thr!r}")
            return None
        revisit = data.get("revisit", True)
        if not isinstance(revisit, bool):
            problems.add(f"{path}.revisit", f"expected true or false, got {revisit!r}")
            return None
        return ExitCondition("progress", threshold=float(thr), revisit=revisit)
    if when == "gripper":
        _unknown_keys(data, ("when", "event"), path, problems)
        event = data.get("event")
        if event not in ("open", "close"):
            problems.add(f"{path}.event", f"expected 'open' or 'close', got {event!r}")
            return None
        return ExitCondition("gripper", event=event)
    if when == "never":
        _unknown_keys(data, ("when",), path, problems)
        return ExitCondition("never")
    problems.add(f"{path}.when", f"expected 'progress', 'gripper' or 'never', got {when!r}")
    return None


def _unknown_keys(data: dict, allowed: tuple[str, ...], path: str, problems: _Problems) -> None:
    for key in data:
        if key not in allowed:
            where = f"{path}.{key}" if path else str(key)
            problems.add(where, f"unknown key (allowed: {', '.join(allowed)})")
