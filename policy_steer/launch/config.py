"""The schema of a launch file (``launch/*.yaml``) and how it is read.

A launch file names processes, each a command line with environment variables, a readiness check, the
processes it must wait for, and whether it is expected to finish::

    name: sim-robot
    vars:                           # ${name} in commands, env values and checks; `--set name=value` overrides
      server: tcp://127.0.0.1:5555
      policy: checkpoints/push-diffusion
    env: {OMP_NUM_THREADS: "1"}     # for every process (on top of the launcher's environment)
    processes:
      - name: server
        command: policy-steer serve --policy ${policy} --bind ${server}
        ready: {kind: ping, endpoint: "${server}", timeout_s: 120}
      - name: robot
        command: [policy-steer, sim-robot, --server, "${server}"]
        after: [server]
        ready: {kind: line, pattern: "sim-robot: connected"}
        finishes: true              # exiting 0 is its normal end: then everything is stopped, exit 0

``command`` is a list of words or one string (split like a shell line, without a shell). The word
``policy-steer`` runs this installation's CLI (``<python> -m policy_steer.cli.main``) and ``python`` this
interpreter, so a launch works from a virtual environment that is not on ``PATH``. Built-in variables:
``${python}``, ``${launch_dir}`` (the launch file's folder) and ``${cwd}``.

Readiness checks (``ready.kind``): ``none`` (healthy once started and still alive after ``grace_s``),
``line`` (a line of its stdout or stderr matches the regular expression ``pattern``), ``ping`` (a
protocol v2 (docs/protocol.md) ``ping`` to ``endpoint`` is answered with ``pong``), ``telemetry`` (a message arrives on the
PUB ``endpoint``, optionally only ``topics``).
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import draccus
import yaml

from policy_steer.errors import ConfigError

READY_KINDS = ("none", "line", "ping", "telemetry")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")


@dataclass
class ReadySpec:
    """How to tell that a process is up."""

    kind: str = "none"  # none | line | ping | telemetry
    pattern: str | None = None  # line: a regular expression searched in each output line
    endpoint: str | None = None  # ping: the server's ROUTER; telemetry: the PUB endpoint
    topics: list[str] = field(default_factory=list)  # telemetry: only these topics (empty: any)
    timeout_s: float = 60.0  # not healthy by then: the launch fails
    grace_s: float = 0.5  # none: alive this long after the start


@dataclass
class ProcessSpec:
    """One process of a launch."""

    name: str = ""
    command: list[str] = field(default_factory=list)  # words (a string in the file is split like a shell line)
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None  # None: the launcher's working directory
    after: list[str] = field(default_factory=list)  # start only once these (earlier) processes are healthy
    ready: ReadySpec = field(default_factory=ReadySpec)
    finishes: bool = False  # exiting with 0 is its normal end (a benchmark, a robot with N episodes)
    stop_signal: str = "SIGINT"  # first signal on shutdown (then SIGTERM, then SIGKILL)


@dataclass
class LaunchFile:
    """A whole launch file; see the module docstring."""

    name: str = "launch"
    description: str = ""
    vars: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    processes: list[ProcessSpec] = field(default_factory=list)
    stop_timeout_s: float = 10.0  # after the first signal, wait this long before SIGTERM (and again before SIGKILL)


def builtin_vars(path: Path) -> dict[str, str]:
    return {"python": sys.executable, "launch_dir": str(path.resolve().parent), "cwd": os.getcwd()}


def parse_overrides(items: list[str]) -> dict[str, str]:
    """``["name=value", ...]`` -> dict; a clear error for anything else.

    ``--set`` arrives split on commas, so a piece without ``=`` continues the value before it:
    ``--set mode=sync,vlash,episodes=3`` sets ``mode`` to ``sync,vlash`` and ``episodes`` to ``3``.
    """
    out: dict[str, str] = {}
    last: str | None = None
    for item in items:
        name, eq, value = item.partition("=")
        name = name.strip()
        if eq and _VAR.fullmatch("${" + name + "}"):
            out[name] = value.strip()
            last = name
        elif not eq and last is not None:
            out[last] += "," + item.strip()
        else:
            raise ConfigError(f"--set takes name=value pairs (comma separated), got {item!r}")
    return out


def _substitute(value: Any, variables: dict[str, str], where: str) -> Any:
    if isinstance(value, str):
        def one(m: re.Match) -> str:
            name = m.group(1)
            if name not in variables:
                raise ConfigError(f"{where}: unknown variable ${{{name}}} (known: {sorted(variables)}; add it under vars or --set)")
            return str(variables[name])

        return _VAR.sub(one, value)
    if isinstance(value, list):
        return [_substitute(v, variables, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _substitute(v, variables, f"{where}.{k}") for k, v in value.items()}
    return value


def _normalise(raw: dict[str, Any], variables: dict[str, str]) -> dict[str, Any]:
    """YAML conveniences before the schema check: string commands, scalar env values, substitution."""
    procs = raw.get("processes")
    if not isinstance(procs, list):
        raise ConfigError("'processes' must be a list of processes (each with a name and a command)")
    out = dict(raw, vars={k: str(v) for k, v in (raw.get("vars") or {}).items()})
    out["env"] = {k: str(v) for k, v in (raw.get("env") or {}).items()}
    out["env"] = _substitute(out["env"], variables, "env")
    norm = []
    for i, p in enumerate(procs):
        if not isinstance(p, dict):
            raise ConfigError(f"processes[{i}] must be a mapping (name, command, ...), got {type(p).__name__}")
        where = f"processes[{i}] ({p.get('name', '?')})"
        p = dict(p)
        cmd = p.get("command")
        if isinstance(cmd, str):
            cmd = _substitute(cmd, variables, f"{where}.command")
            try:
                p["command"] = shlex.split(cmd)
            except ValueError as e:
                raise ConfigError(f"{where}.command: cannot split {cmd!r}: {e}") from None
        elif isinstance(cmd, list):
            p["command"] = [str(w) for w in _substitute(cmd, variables, f"{where}.command")]
        else:
            raise ConfigError(f"{where}: 'command' must be a string or a list of words")
        if "env" in p:
            if not isinstance(p["env"], dict):
                raise ConfigError(f"{where}.env must be a mapping of NAME: value")
            p["env"] = _substitute({k: str(v) for k, v in p["env"].items()}, variables, f"{where}.env")
        for key in ("cwd", "ready"):
            if key in p:
                p[key] = _substitute(p[key], variables, f"{where}.{key}")
        norm.append(p)
    out["processes"] = norm
    return out


def validate(cfg: LaunchFile, source: str) -> LaunchFile:
    """Checks the schema cannot express; every message names the process and the field."""
    import signal

    if not cfg.processes:
        raise ConfigError(f"{source}: no processes to launch")
    if cfg.stop_timeout_s <= 0:
        raise ConfigError(f"{source}: stop_timeout_s must be > 0")
    seen: list[str] = []
    for i, p in enumerate(cfg.processes):
        where = f"{source}: processes[{i}]" + (f" ({p.name})" if p.name else "")
        if not _NAME.match(p.name or ""):
            raise ConfigError(f"{where}: 'name' must be 1-32 letters, digits, '-', '_' or '.', got {p.name!r}")
        if p.name in seen:
            raise ConfigError(f"{where}: the name {p.name!r} is used twice")
        if not p.command or not p.command[0]:
            raise ConfigError(f"{where}: 'command' is empty")
        for dep in p.after:
            if dep not in seen:
                known = "; earlier processes: " + ", ".join(seen) if seen else ""
                raise ConfigError(f"{where}: 'after' names {dep!r}, which is not an earlier process{known}")
        r = p.ready
        if r.kind not in READY_KINDS:
            raise ConfigError(f"{where}: ready.kind must be one of {READY_KINDS}, got {r.kind!r}")
        if r.kind == "line":
            if not r.pattern:
                raise ConfigError(f"{where}: ready.kind 'line' needs ready.pattern (a regular expression)")
            try:
                re.compile(r.pattern)
            except re.error as e:
                raise ConfigError(f"{where}: ready.pattern {r.pattern!r} is not a regular expression: {e}") from None
        if r.kind in ("ping", "telemetry") and not (r.endpoint or "").startswith(("tcp://", "ipc://", "inproc://")):
            raise ConfigError(f"{where}: ready.kind {r.kind!r} needs ready.endpoint (tcp://host:port), got {r.endpoint!r}")
        if r.timeout_s <= 0 or r.grace_s < 0:
            raise ConfigError(f"{where}: ready.timeout_s must be > 0 and ready.grace_s >= 0")
        if p.stop_signal not in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2") or not hasattr(signal, p.stop_signal):
            raise ConfigError(f"{where}: stop_signal must be SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 or SIGUSR2")
        seen.append(p.name)
    return cfg


def load_launch(path: str | Path, overrides: dict[str, str] | None = None) -> LaunchFile:
    """Read, substitute and check a launch file. Raises ConfigError naming the file and the field."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"launch file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a launch file is a mapping with 'processes' (and name, vars, env)")
    file_vars = raw.get("vars") or {}
    if not isinstance(file_vars, dict):
        raise ConfigError(f"{path}: 'vars' must be a mapping of name: value")
    unknown = set(overrides or {}) - set(file_vars)
    if unknown:
        raise ConfigError(f"{path}: --set names {sorted(unknown)}, which are not under vars (known: {sorted(file_vars)})")
    variables = {**builtin_vars(path), **{k: str(v) for k, v in file_vars.items()}, **(overrides or {})}
    data = _normalise(raw, variables)
    data["vars"] = {k: variables[k] for k in file_vars}
    try:
        cfg = draccus.decode(LaunchFile, data)
    except draccus.utils.DecodingError as e:
        raise ConfigError(f"{path}: {e}") from None
    return validate(cfg, str(path))
