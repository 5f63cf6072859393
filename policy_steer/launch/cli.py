"""``policy-steer launch FILE``: start the processes of a launch file, check their health, stop them cleanly.

    policy-steer launch launch/sim_robot.yaml
    policy-steer launch launch/sim_robot.yaml --set policy=checkpoints/push-diffusion,episodes=5
    policy-steer launch launch/sim_benchmark.yaml --set mode=sync,vlash --set episodes=10   # lists; --set repeats
    policy-steer launch launch/real_robot.yaml --check true     # print the resolved plan, start nothing

Exit code 0 when the launch ended normally (or on Ctrl-C with every process stopping cleanly), 1 when a
process failed, 2 for a bad launch file.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from typing import ClassVar

from policy_steer.config import StrList
from policy_steer.errors import ConfigError


@dataclass
class LaunchArgs:
    """Options of ``policy-steer launch``; the launch file itself is a :class:`~policy_steer.launch.config.LaunchFile`."""

    POSITIONAL: ClassVar[str] = "file"  # `policy-steer launch FILE` == `--file FILE`

    file: str = ""  # the launch file (YAML)
    set: StrList = field(default_factory=StrList)  # name=value overrides of the file's vars (comma separated)
    check: bool = False  # load, substitute and validate; print the commands; start nothing
    color: bool | None = None  # colour the prefixes (None: when stdout is a terminal)


def prepare_args(name: str, argv: list[str]) -> list[str]:
    """``--set a=1 --set b=2`` is ``--set a=1,b=2`` (the option parser would keep only the last one)."""
    pairs: list[str] = []
    rest: list[str] = []
    it = iter(argv)
    for word in it:
        if word == "--set":
            value = next(it, None)
            if value is None:
                raise ConfigError("--set needs name=value pairs, e.g. --set policy=checkpoints/push-diffusion")
            pairs.append(value)
        elif word.startswith("--set="):
            pairs.append(word[len("--set="):])
        else:
            rest.append(word)
    # quoted: the option parser reads values as YAML, which would take a ':' or '#' in a path as syntax
    return rest + (["--set", json.dumps(",".join(pairs))] if pairs else [])


def run(args: LaunchArgs) -> int:
    from policy_steer.launch.config import load_launch, parse_overrides
    from policy_steer.launch.launcher import Launcher

    if not args.file:
        raise ConfigError("name a launch file: policy-steer launch launch/sim_robot.yaml")
    cfg = load_launch(args.file, parse_overrides(list(args.set)))
    if args.check:
        print(f"{args.file}: {cfg.name}: {len(cfg.processes)} process(es) OK")
        for p in cfg.processes:
            after = f" (after {', '.join(p.after)})" if p.after else ""
            print(f"  {p.name}{after}: ready={p.ready.kind} finishes={p.finishes}\n    {shlex.join(p.command)}")
        return 0
    return Launcher(cfg, color=args.color).run()


COMMANDS = {"launch": (LaunchArgs, run)}
