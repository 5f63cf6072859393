"""A model's answer -> plain data. The answer is only ever parsed as JSON: never exec'd, eval'd or imported.

Accepted: a bare JSON object; a JSON object inside a fenced block (```json ... ``` or ``` ... ```);
a JSON object after some prose (the first ``{`` that starts a complete object). NaN and Infinity are
parsed (Python's json accepts them) and then rejected by validation, which names their place.
"""

from __future__ import annotations

import json
import re
from typing import Any

from policy_steer.vlm_rewards.errors import ProgramParseError

MAX_ANSWER_CHARS = 200_000  # a program is a few kB; anything far larger is not one
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_-]*)[ \t]*\r?\n?(.*?)```", re.DOTALL)


def parse_json_answer(text: str) -> Any:
    """The JSON object in ``text``; raises :class:`ProgramParseError` (place ``answer``) when there is none."""
    if not isinstance(text, str):
        raise ProgramParseError.at("answer", f"expected text, got {type(text).__name__}")
    if len(text) > MAX_ANSWER_CHARS:
        raise ProgramParseError.at("answer", f"{len(text)} characters; at most {MAX_ANSWER_CHARS} are read")
    candidates = [body for lang, body in _FENCE.findall(text) if lang.lower() in ("", "json")]
    candidates.append(text)
    first_error = None
    for c in candidates:
        try:
            return _decode_object(c)
        except ValueError as e:
            first_error = first_error or e
    raise ProgramParseError.at("answer", f"no JSON object found ({first_error})")


def _decode_object(text: str) -> Any:
    text = text.strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        start = text.find("{")
        if start < 0:
            raise ValueError(f"not JSON: {e}") from None
        try:
            value, _ = json.JSONDecoder().raw_decode(text, start)
        except json.JSONDecodeError as e2:
            raise ValueError(f"not JSON: {e2}") from None
        return value
