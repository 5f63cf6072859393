"""Published JSON schemas of the data that crosses the wire or is read from a user's file.

``episode_context.schema.json``: the episode context of protocol v2's ``episode`` and ``context``
messages and of ``policy-steer robot --scene FILE.json`` (a scene alone, or a whole context).
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Any

from policy_steer.errors import ValidationError

EPISODE_CONTEXT_SCHEMA = Path(__file__).parent / "episode_context.schema.json"


@functools.lru_cache(maxsize=None)
def _validator(what: str):
    import jsonschema

    schema = json.loads(EPISODE_CONTEXT_SCHEMA.read_text())
    if what != "context":
        schema = {**schema["$defs"][what], "$defs": schema["$defs"]}
    return jsonschema.Draft202012Validator(schema)


def validate(data: Any, what: str = "context") -> None:
    """Raise ValidationError naming the first problem of ``data`` (``what``: context | scene | robot)."""
    from jsonschema.exceptions import best_match

    # best_match descends into oneOf/anyOf, so "a scene or null" reports the scene's own problem
    e = best_match(_validator(what).iter_errors(data))
    if e is not None:
        where = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        raise ValidationError(f"{what} fails its schema at {where}: {e.message[:300]}")
    bad = _non_finite(data, [])
    if bad is not None:  # JSON Schema's "number" admits NaN and inf, a robot must not
        raise ValidationError(f"{what} fails its schema at {'/'.join(bad) or '(top level)'}: not a finite number")


def _non_finite(value: Any, path: list[str]) -> list[str] | None:
    if isinstance(value, float) and not math.isfinite(value):
        return path
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    else:
        return None
    for k, v in items:
        found = _non_finite(v, [*path, str(k)])
        if found is not None:
            return found
    return None
