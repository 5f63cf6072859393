"""A model's answer -> plain data. The answer is only ever parsed as JSON: never exec'd, eval'd or imported.

Accepted: a bare JSON object; a JSON object inside a fenced block (```json ... ``` or ``` ... ```);
a JSON object after some prose (the first ``{`` that starts a complete object). NaN and Infinity are
parsed (Python's json accepts them) and then rejected by validation, which names their place.

An answer is untrusted input, so the parser has limits: at most :data:`MAX_ANSWER_CHARS` characters,
and JSON nested at most :data:`MAX_DEPTH` arrays/objects deep (a program is 7 deep; Python's decoder
would otherwise recurse until ``RecursionError``). Either limit, like any other parse failure, is a
:class:`ProgramParseError` naming it, which the chat synthesizer answers by asking again.
"""

from __future__ import annotations

import json
import re
from typing import Any

from policy_steer.vlm_rewards.errors import ProgramParseError

MAX_ANSWER_CHARS = 200_000  # a program is a few kB; anything far larger is not one
MAX_DEPTH = 32  # arrays/objects nested in each other; a program needs 7 (program, stages, stage, terms, term, args, offset)
_TOKENS = re.compile(r'[\[\]{}"\\]')
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
        if text[:1] in ("[", "{"):  # anything else fails at once, without nesting
            _check_depth(text, 0)
        return json.loads(text)
    except json.JSONDecodeError as e:
        start = text.find("{")
        if start < 0:
            raise ValueError(f"not JSON: {e}") from None
        _check_depth(text, start)
        try:
            value, _ = json.JSONDecoder().raw_decode(text, start)
        except json.JSONDecodeError as e2:
            raise ValueError(f"not JSON: {e2}") from None
        return value
    except RecursionError:  # not reached with MAX_DEPTH well below the interpreter's limit; never let it out
        raise ProgramParseError.at("answer", f"JSON nested too deep to decode; at most {MAX_DEPTH} levels are read") from None


def _check_depth(text: str, start: int) -> None:
    """Refuse JSON nested deeper than MAX_DEPTH, reading ``text`` from ``start`` as the decoder would:
    brackets inside strings do not count (a string runs to the next unescaped quote)."""
    depth, in_string, skip = 0, False, -1
    for m in _TOKENS.finditer(text, start):
        pos = m.start()
        if pos == skip:  # the character after a backslash in a string
            continue
        c = m.group()
        if in_string:
            if c == "\\":
                skip = pos + 1
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise ProgramParseError.at(
                    "answer", f"JSON nested more than {MAX_DEPTH} levels deep (at character {pos}); "
                              f"at most {MAX_DEPTH} levels are read (a reward program needs 7)")
        elif c in "]}":
            depth -= 1
            if depth <= 0:
                return  # the decoder stops at the end of the first value (json.loads then fails on the rest)
