"""Every option of every command prints a help line that says what it is and its default.

The commands and their config classes are read from the CLI's own registry
(``policy_steer.cli.main.COMMANDS``), the options from the config dataclasses (nested ones, such as
``--watchdog.stop_after_s``, included), and ``policy-steer <command> --help`` is parsed as a user reads
it: each option's block must hold a description and ``(default: ...)``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import io
import typing

import pytest

from policy_steer.cli.main import COMMANDS
from policy_steer.config import parse_config


def config_class(name: str) -> type:
    module = importlib.import_module(COMMANDS[name][0])
    return module.COMMANDS[name][0] if hasattr(module, "COMMANDS") else module.Config


def option_names(cls: type, prefix: str = "") -> list[str]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        t = hints.get(f.name)
        if isinstance(t, type) and dataclasses.is_dataclass(t):
            out += option_names(t, f"{prefix}{f.name}.")
        else:
            out.append(prefix + f.name)
    return out


def help_blocks(text: str) -> dict[str, str]:
    """``--flag`` -> its help block (the lines from the flag to the next option), whitespace folded."""
    blocks: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        stripped = line.strip()
        if line.startswith("  --"):
            current = stripped.split()[0]
            blocks[current] = [stripped]
        elif current is not None and line.startswith(" " * 10) and stripped:
            blocks[current].append(stripped)
        else:
            current = None
    return {k: " ".join(" ".join(v).split()) for k, v in blocks.items()}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_has_a_help_line_with_its_default(name):
    cls = config_class(name)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
        parse_config(cls, ["--help"], prog=f"policy-steer {name}")
    assert done.value.code == 0
    blocks = help_blocks(out.getvalue())
    problems = []
    for opt in option_names(cls):
        flag = f"--{opt}"
        block = blocks.get(flag)
        if block is None:
            problems.append(f"{flag}: not in --help")
            continue
        if "(default:" not in block:
            problems.append(f"{flag}: no default shown ({block!r})")
            continue
        words = block.split("(default:")[0].split()[2:]  # drop the flag and its metavar
        if not words:
            problems.append(f"{flag}: no description, only its default")
    assert not problems, f"policy-steer {name} --help:\n" + "\n".join(problems)


def test_the_two_robot_hosts_share_their_option_names():
    """One host, one set of option names: robot and sim-robot differ only by their driver's options."""
    from policy_steer.hardware.host import HostOptions

    shared = set(option_names(HostOptions))
    robot, sim = set(option_names(config_class("robot"))), set(option_names(config_class("sim-robot")))
    assert shared <= robot and shared <= sim
    for opt in ("request_timeout_s", "client_name", "report", "dry_run", "records", "server", "telemetry",
                "watchdog.stop_after_s", "estop", "max_steps"):
        assert opt in shared, opt
    # the old names are gone from both
    for old in ("timeout_s", "name", "json", "safety", "max_episode_steps"):
        assert old not in robot and old not in sim, old
    assert {"driver", "instruction", "scene", "virtual_arm"} <= robot - sim
    assert {"task", "variant", "episodes", "seed", "clock", "latency"} <= sim - robot
