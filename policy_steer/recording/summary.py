"""What a bag holds, read with ``rosbags``' own reader: topics, types, counts, duration, the outcome.

``summarize(path)`` returns plain data; ``summary_lines`` the text ``policy-steer bag summary DIR``
prints. ``DIR`` is one rosbag2 folder (``metadata.yaml`` inside) or a folder of them (a benchmark's
``--record_bag``): every bag below it is summarised, in name order. The outcome comes from the
metadata's ``custom_data`` (``policy_steer.outcome``, JSON written by our recorder); a bag someone else
wrote has none, and says so. Nothing read from the bag is executed or imported.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from policy_steer.errors import ConfigError


def bag_folders(path: str | Path) -> list[Path]:
    """``path`` itself when it is a bag, else every bag folder below it; ConfigError when there is none."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"no such bag folder: {path}")
    if (path / "metadata.yaml").is_file():
        return [path]
    found = sorted(p.parent for p in path.rglob("metadata.yaml"))
    if not found:
        raise ConfigError(f"{path} holds no rosbag2 folder (no metadata.yaml below it)")
    return found


def summarize(path: str | Path) -> dict[str, Any]:
    """One bag folder: ``topics`` {topic: {type, count}}, ``messages``, ``duration_s``, ``start_s``,
    ``storage`` and ``outcome`` (None when the bag carries none)."""
    from rosbags.rosbag2 import Reader
    from rosbags.rosbag2.errors import ReaderError

    path = Path(path)
    try:
        with Reader(path) as reader:
            topics = {t: {"type": info.msgtype, "count": int(info.msgcount)} for t, info in sorted(reader.topics.items())}
            count, start, duration = int(reader.message_count), int(reader.start_time), int(reader.duration)
    except ReaderError as e:
        raise ConfigError(f"{path}: not a readable rosbag2 folder: {e}") from None
    # custom_data and the storage id: the metadata file itself (plain YAML, read safely)
    info = (yaml.safe_load((path / "metadata.yaml").read_text()) or {}).get("rosbag2_bagfile_information", {})
    custom = {str(k): str(v) for k, v in (info.get("custom_data") or {}).items()}
    storage = [str(info.get("storage_identifier") or "?")]
    outcome = None
    if "policy_steer.outcome" in custom:
        try:
            outcome = json.loads(custom["policy_steer.outcome"])
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: metadata custom_data policy_steer.outcome is not JSON: {e}") from None
    return {
        "path": str(path), "topics": topics, "messages": count,
        "start_s": start / 1e9 if count else None, "duration_s": duration / 1e9 if count else 0.0,
        "storage": storage, "outcome": outcome,
        "task": custom.get("policy_steer.task") or None, "variant": custom.get("policy_steer.variant") or None,
        "instruction": custom.get("policy_steer.instruction") or None,
    }


def summary_lines(s: dict[str, Any]) -> list[str]:
    out = [f"bag {s['path']} ({', '.join(s['storage']) or '?'}): {s['messages']} messages over {s['duration_s']:.2f} s"
           + (f" from t={s['start_s']:.3f} s" if s["start_s"] is not None else "")]
    if s["task"]:
        out.append(f"  task {s['task']} / {s['variant']}: {s['instruction']!r}")
    width = max([len(t) for t in s["topics"]] + [5])
    for topic, t in s["topics"].items():
        out.append(f"  {topic:<{width}}  {t['count']:>6}  {t['type']}")
    o = s["outcome"]
    if o is None:
        out.append("  outcome: none recorded (not a policy-steer bag, or the recording ended early)")
    else:
        if o.get("success") is None:  # a server's recording: the robot decides success, the server never hears it
            verdict = f"not known to the recorder (ended: {o.get('ended')})"
        else:
            verdict = "success" if o["success"] else f"failure ({o.get('failure') or 'not finished'})"
        out.append(f"  outcome: {verdict}; seed {o.get('seed')}, {o.get('steps')} steps, {o.get('n_chunks')} chunks, "
                   f"{o.get('stall_steps')} held, {o.get('recorder_dropped', 0)} recorder drops"
                   + (f"; {o['recorder_error']}" if o.get("recorder_error") else ""))
    return out
