"""The plain command groups that sit beside LightningCLI: `pdgen data`, `pdgen eval`, `pdgen view`.

Each group is one module of this package (`data.py`, `eval.py`, `view.py`), and the rule for its
subcommands is the whole design:

    every public function defined at the top level of the module is a subcommand.

Its name (underscores become dashes) is the subcommand's name, the first line of its docstring is the
one-line help that `pdgen --help` lists, the rest of the docstring and its Google-style `Args:` become
`pdgen <group> <name> --help`, and its type-hinted parameters become the options. Parameters without a
default are positional, and so are positional-only ones (before `/`), optional when they have a
default (`pdgen data parse "PROMPT"` or `pdgen data parse --file F`). A `bool` with a default is a flag:
`--augment` sets it, `--no_augment` clears it. Every subcommand also accepts `-c/--config FILE` with
its options in YAML.
Helpers start with an underscore; names imported into the module are not subcommands. The group's own
one-line help is the first line of the module docstring.

The subcommand list is read from the module's source with `ast`, so `pdgen --help` does not import the
group modules (or what they import); the module is imported only to run a subcommand.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

GROUPS = ("data", "eval", "view")
"""The command groups, in the order `pdgen --help` lists them."""


@dataclass(frozen=True)
class Subcommand:
    """One subcommand as read from its group's source: `function` is the Python name."""

    name: str
    function: str
    summary: str


def _source(group: str) -> ast.Module:
    if group not in GROUPS:
        raise ValueError(f"unknown command group {group!r}; the groups are {', '.join(GROUPS)}")
    path = Path(__file__).with_name(f"{group}.py")
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _first_line(docstring: str | None) -> str:
    return docstring.strip().splitlines()[0].strip() if docstring and docstring.strip() else ""


def _description(docstring: str | None) -> str:
    """A docstring up to its `Args:`/`Returns:`/`Raises:` section; jsonargparse shows `Args:` per option."""
    kept = []
    for line in (docstring or "").splitlines():
        if line.strip() in ("Args:", "Returns:", "Raises:"):
            break
        kept.append(line)
    return "\n".join(kept).strip()


def group_summary(group: str) -> str:
    """The one-line help of a command group: the first line of its module docstring."""
    return _first_line(ast.get_docstring(_source(group)))


def subcommands(group: str) -> list[Subcommand]:
    """The subcommands of a group in definition order, read from its source without importing it."""
    return [
        Subcommand(
            name=node.name.replace("_", "-"), function=node.name, summary=_first_line(ast.get_docstring(node))
        )
        for node in _source(group).body
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_")
    ]


def _hand_made_arguments(function: Callable) -> dict[str, tuple[str, dict]]:
    """The parameters jsonargparse would not read as intended: `{name: (argument name, add_argument kwargs)}`.

    A positional-only parameter with a default becomes an optional positional, and a `bool` with a
    default becomes a `--name` / `--no_name` flag; every other parameter is left to jsonargparse.
    """
    from docstring_parser import parse as parse_docstring
    from jsonargparse import ActionYesNo

    hints = typing.get_type_hints(function)
    helps = {p.arg_name: p.description for p in parse_docstring(inspect.getdoc(function) or "").params}
    arguments = {}
    for name, parameter in inspect.signature(function).parameters.items():
        if parameter.default is inspect.Parameter.empty:
            continue
        if parameter.kind is inspect.Parameter.POSITIONAL_ONLY:
            arguments[name] = (name, dict(nargs="?", type=hints[name], default=parameter.default))
        elif hints.get(name) is bool:
            arguments[name] = (f"--{name}", dict(action=ActionYesNo, default=parameter.default))
        else:
            continue
        arguments[name][1]["help"] = helps.get(name, "")
    return arguments


def run(group: str, argv: list[str]) -> None:
    """Parse `argv` (what follows `pdgen <group>`) and call the chosen subcommand.

    A subcommand that returns something other than None has it printed. A `ValueError` it raises is a
    user error: it ends the command with its message and exit status 1, without a traceback. A group with
    a single subcommand may leave its name out (`pdgen view DIR` is `pdgen view html DIR`).

    Raises:
        SystemExit: on `--help`, a usage error or a user error.
    """
    from jsonargparse import ActionConfigFile, ArgumentParser

    module = importlib.import_module(f"pdgen.commands.{group}")
    parser = ArgumentParser(prog=f"pdgen {group}", description=inspect.getdoc(module))
    functions: dict[str, Callable] = {}
    choices = parser.add_subcommands(dest="command")
    for command in subcommands(group):
        function = getattr(module, command.function)
        functions[command.name] = function
        description = _description(inspect.getdoc(function))
        sub = ArgumentParser(prog=f"pdgen {group} {command.name}", description=description)
        sub.add_argument("-c", "--config", action=ActionConfigFile, help="YAML file with these options")
        hand_made = _hand_made_arguments(function)
        sub.add_function_arguments(function, as_positional=True, fail_untyped=True, skip=set(hand_made))
        for argument, kwargs in hand_made.values():
            sub.add_argument(argument, **kwargs)
        choices.add_subcommand(command.name, sub, help=command.summary)
    if len(functions) == 1 and argv and argv[0] not in functions and not argv[0].startswith("-"):
        argv = [*functions, *argv]
    config = parser.parse_args(argv)
    chosen = config.command
    options = parser.instantiate(config)[chosen]
    arguments = {key: value for key, value in options.items() if key != "config"}
    positional_only = [
        name
        for name, parameter in inspect.signature(functions[chosen]).parameters.items()
        if parameter.kind is inspect.Parameter.POSITIONAL_ONLY
    ]
    leading = [arguments.pop(name) for name in positional_only]
    try:
        result = functions[chosen](*leading, **arguments)
    except ValueError as error:  # user errors (TrajectoryError too) name what is wrong; no traceback
        raise SystemExit(f"pdgen {group} {chosen}: {error}") from error
    if result is not None:
        print(result)
