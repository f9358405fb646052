"""Run configurations that know their own command line.

A stage's config is a frozen dataclass whose fields are the destinations of its script's arguments (argparse's
`dest`). One renderer turns a config into the command a user types to run that stage (for the "run this to make
it" messages and the stage records), and one reader turns parsed arguments into the config, so a script is
`parse -> config_from_args -> run_<stage>(config)` and a library caller builds the same config directly.

Field metadata (via `option`):
- `flag`: the option's spelling when it is not `--<field name>` (the upstream scripts' names are kept);
- `cli=False`: a field that is not on the command line (a library-only input such as an in-memory encoder);
- `always=True`: rendered even when it equals its default (the model and layer, so a message names them).
A field left at its default (or None) is not rendered; a boolean is a bare flag; a list or tuple is nargs.
Values are shell-quoted, except one-word `<...>` placeholders for what a message cannot know ("--layer <L>").
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
from pathlib import Path
from typing import Any, TypeVar

Config = TypeVar("Config")


def option(default: Any = None, *, flag: str | None = None, cli: bool = True, always: bool = False) -> Any:
    """A config field with command-line metadata (see the module docstring)."""
    metadata = {"flag": flag, "cli": cli, "always": always}
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple for a list-valued default (configs are frozen)")
    return dataclasses.field(default=default, metadata=metadata)


def cli_fields(config_type: type) -> list[dataclasses.Field]:
    """The fields of a config class that are command-line options."""
    return [f for f in dataclasses.fields(config_type) if f.metadata.get("cli", True)]


def flag_of(field: dataclasses.Field) -> str:
    return field.metadata.get("flag") or f"--{field.name}"


def render_value(value: Any) -> str:
    """str() of the value: a float's shortest round-trip text, a Path as written."""
    return str(value)


def render_command(script: str, config: Any) -> str:
    """`python <script> --flag value ...` for every option of `config` that differs from its default."""
    parts = ["python", script]
    for field in cli_fields(type(config)):
        value = getattr(config, field.name)
        if value is None or (value == field.default and not field.metadata.get("always")):
            continue
        if isinstance(value, bool):
            if value:
                parts.append(flag_of(field))
            continue
        if isinstance(value, (list, tuple)):
            parts += [flag_of(field), *(render_value(v) for v in value)]
        else:
            parts += [flag_of(field), render_value(value)]
    return " ".join(p if is_placeholder(p) else shlex.quote(p) for p in parts)


def is_placeholder(text: str) -> bool:
    """A `<...>` stand-in for a value the message cannot know (shown as is, not shell-quoted)."""
    return text.startswith("<") and text.endswith(">") and not any(c.isspace() for c in text)


def config_from_args(config_type: type[Config], args: argparse.Namespace, **library_only: Any) -> Config:
    """The config whose options are the parsed arguments (lists become tuples); `library_only` fills the rest."""
    values = {}
    for field in cli_fields(config_type):
        value = getattr(args, field.name)
        values[field.name] = tuple(value) if isinstance(value, list) else value
    return config_type(**values, **library_only)


def command_args(config: Any) -> list[str]:
    """The rendered command's arguments after the script (for parsing it back in tests)."""
    return shlex.split(render_command("script", config))[2:]


def as_path(value: str | Path | None) -> Path | None:
    """A user-given path option as an absolute Path (None stays None)."""
    return None if value is None else Path(value).expanduser().resolve()
