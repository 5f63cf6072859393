"""Entry point of the ``policy-steer`` console script.

Commands are registered lazily by name (``"envs list"`` is a two-word command) so that
``policy-steer --help`` does not import torch. Each command module exposes ``Config`` (a dataclass)
and ``run(cfg) -> int | None``. A :class:`~policy_steer.errors.PolicySteerError` becomes one line on
stderr and exit code 2.
"""

from __future__ import annotations

import importlib
import logging
import signal
import sys
import threading

from policy_steer.config import parse_config
from policy_steer.errors import PolicySteerError

# command words -> (module, one-line help). Modules live in policy_steer.cli unless dotted.
COMMANDS: dict[str, tuple[str, str]] = {
    "envs list": ("policy_steer.envs.cli", "list tasks, variants, observation and action shapes"),
    "envs show": ("policy_steer.envs.cli", "render a picture (or a video) of a task variant"),
    "record": ("policy_steer.envs.recording", "record scripted demonstrations as a LeRobotDataset"),
    "bench": ("policy_steer.cli.bench", "seeded benchmark of policies x steering x modes; JSON, Markdown, plots"),
    "fit-verifier": ("policy_steer.steering.taco.fit", "fit TACO's pseudo-count verifier (CFN) to a policy and its demonstrations"),
    "train-reference": ("policy_steer.cli.train_reference", "train a reference policy with lerobot on recorded demonstrations"),
    "serve": ("policy_steer.transport.cli", "serve a steered policy over ZeroMQ (docs/protocol.md v2)"),
    "keys": ("policy_steer.transport.cli", "make CURVE key pairs and the client allow-list for serve"),
    "synthesize": ("policy_steer.cli.synthesize", "print the reward program (JSON) for the scene of a task variant"),
    "bag summary": ("policy_steer.cli.bag", "what a recorded ROS 2 bag (or a folder of them) holds: topics, counts, duration, outcome"),
    "launch": ("policy_steer.launch.cli", "start the processes of a launch/*.yaml, check their health, stop them cleanly"),
    # hardware: module paths only (the core never imports policy_steer.hardware)
    "robot": ("policy_steer.hardware.cli", "the robot host on an arm: driver + safety layer + policy server"),
    "sim-robot": ("policy_steer.hardware.cli", "the robot host on a simulated task (sim-as-robot), driven by a policy server"),
    "estop": ("policy_steer.hardware.cli", "safe-stop a running robot host (robot or sim-robot) through its control socket"),
}


def _usage() -> str:
    width = max(len(k) for k in COMMANDS)
    lines = ["usage: policy-steer <command> [--config_path FILE] [--option value ...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "policy-steer <command> --help shows a command's options."]
    return "\n".join(lines)


def _resolve(argv: list[str]) -> tuple[str, list[str]]:
    for n_words in (2, 1):
        name = " ".join(argv[:n_words])
        if len(argv) >= n_words and name in COMMANDS:
            return name, argv[n_words:]
    raise PolicySteerError(f"unknown command {' '.join(argv[:2])!r}; run 'policy-steer --help' for the list")


# Commands whose docstring promises exit 0 on SIGTERM/SIGINT, also before they install their own handlers.
_SIGNAL_EXIT_0 = ("serve", "robot", "sim-robot")


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM during start-up (imports, loading) ends like Ctrl-C, not by a bare kill


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)  # until the command installs its own
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        name, rest = _resolve(argv)
        module = importlib.import_module(COMMANDS[name][0])
        config_cls, run = module.COMMANDS[name] if hasattr(module, "COMMANDS") else (module.Config, module.run)
        if hasattr(module, "prepare_args"):  # a command's own shell conveniences (bare --flag, repeated flags)
            rest = module.prepare_args(name, rest)
        positional = getattr(config_cls, "POSITIONAL", None)  # e.g. `policy-steer launch FILE`
        if positional and rest and not rest[0].startswith("-"):
            rest = [f"--{positional}", rest[0], *rest[1:]]
        cfg = parse_config(config_cls, rest, prog=f"policy-steer {name}")
        code = run(cfg)
        return int(code or 0)
    except PolicySteerError as e:
        print(f"policy-steer: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("policy-steer: interrupted", file=sys.stderr)
        return 0 if argv and argv[0] in _SIGNAL_EXIT_0 else 130


if __name__ == "__main__":
    sys.exit(main())
