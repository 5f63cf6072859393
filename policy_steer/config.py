"""Config loading: dataclasses parsed by draccus from the command line and from YAML/TOML files.

Every command takes a dataclass config. ``--config_path file.yaml`` (or ``.toml``) loads it from a
file; flags override the file. Comma lists (``--candidates 1,4,8``, ``--mode sync,vlash``) are
accepted wherever a field is typed ``IntList``, ``FloatList`` or ``StrList``.
"""

from __future__ import annotations

import argparse
import tempfile
import tomllib
from pathlib import Path
from typing import Any, TypeVar

import draccus
import yaml

from policy_steer.errors import ConfigError

T = TypeVar("T")


class _CommaList(list):
    item: type = str

    @classmethod
    def decode(cls, raw: Any) -> "_CommaList":
        if isinstance(raw, str):
            raw = [p for p in raw.strip().strip("[]").split(",") if p.strip()]
        elif not isinstance(raw, (list, tuple)):
            raw = [raw]
        try:
            return cls(cls.item(p.strip() if isinstance(p, str) else p) for p in raw)
        except ValueError as e:
            raise ValueError(f"cannot read {raw!r} as a comma list of {cls.item.__name__}: {e}") from e


class IntList(_CommaList):
    item = int


class FloatList(_CommaList):
    item = float


class StrList(_CommaList):
    item = str


for _cls in (IntList, FloatList, StrList):
    draccus.decode.register(_cls, _cls.decode)
    draccus.encode.register(_cls, list)


def parse_config(cls: type[T], args: list[str], prog: str | None = None) -> T:
    """Parse ``args`` into ``cls``; ``--config_path`` may name a YAML or TOML file."""
    config_path = None
    rest: list[str] = []
    # --seed-start and --seed_start are the same option.
    args = [_underscore_flag(a) for a in args]
    it = iter(args)
    for a in it:
        if a == "--config_path":
            config_path = next(it, None)
        elif a.startswith("--config_path="):
            config_path = a.split("=", 1)[1]
        else:
            rest.append(a)
    if config_path is not None and Path(config_path).suffix == ".toml":
        # draccus reads YAML; TOML is converted to a temporary YAML mapping.
        data = tomllib.loads(Path(config_path).read_text())
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            yaml.safe_dump(data, f)
            config_path = f.name
    if config_path is not None and not Path(config_path).is_file():
        raise ConfigError(f"config file not found: {config_path}")
    try:
        return build_parser(cls, config_path, prog).parse_args(rest)
    except draccus.utils.DecodingError as e:
        raise ConfigError(f"bad option: {e}") from e


def build_parser(cls: type[T], config_path: str | None = None, prog: str | None = None) -> Any:
    """draccus's parser for ``cls``, with a help line for every option that shows its default.

    A field's help is its inline comment (or the comment above it, or a docstring below it). Every option
    prints ``(default: ...)``: draccus gives an option without a comment a blank help string so that
    argparse would still print its default, but argparse (Python 3.12) drops whitespace-only help, and the
    option printed nothing at all; such options get the default alone.
    """
    from draccus.argparsing import ArgumentParser

    parser = ArgumentParser(config_class=cls, config_path=config_path, prog=prog, exit_on_error=True)
    for action in parser.parser._actions:
        if action.help is None or (action.help != argparse.SUPPRESS and not action.help.strip()):
            action.help = "(default: %(default)s)"
    return parser


def _underscore_flag(arg: str) -> str:
    if not arg.startswith("--"):
        return arg
    name, eq, value = arg[2:].partition("=")
    return "--" + name.replace("-", "_") + eq + value


def load_config(cls: type[T], path: str | Path) -> T:
    """Load ``cls`` from a YAML or TOML file (no command line)."""
    return parse_config(cls, ["--config_path", str(path)])
