"""The plain command groups that sit beside LightningCLI: `pdgen data`, `pdgen eval`, `pdgen view`.

Each group is one module of this package (`data.py`, `eval.py`, `view.py`) that lists its subcommands,
plain functions, in its `COMMANDS` tuple, in the order `pdgen --help` shows them. From each function
jsonargparse builds the subcommand:

- its name (underscores become dashes) is the subcommand's name, the first line of its docstring the
  one-line help that `pdgen --help` lists; the rest of the docstring and its Google-style `Args:` become
  `pdgen <group> <name> --help`;
- its type-hinted parameters are the options. Parameters without a default are positional, and so are
  positional-only ones (before `/`), optional when they have a default (`pdgen data parse "PROMPT"` or
  `pdgen data parse --file F`). A `bool` with a default is a flag: `--augment` sets it, `--no_augment`
  clears it. Every subcommand also accepts `-c/--config FILE` with its options in YAML.

The group's own one-line help is the first line of its module docstring. Group modules import only the
standard library, PIL and light pdgen modules at the top (`pdgen --help` imports all three); what a
subcommand needs beyond that it imports inside the function.

A subcommand that raises a `pdgen.errors.UserError` ends with its message; any other exception keeps its
traceback.
"""

from __future__ import annotations

import importlib
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

from pdgen.errors import exit_on_user_error

GROUPS = ("data", "eval", "view")
"""The command groups, in the order `pdgen --help` lists them."""


@dataclass(frozen=True)
class Subcommand:
    """One subcommand of a group: its name on the command line and the function it runs."""

    name: str
    function: Callable[..., object]

    @property
    def summary(self) -> str:
        """The one-line help: the first line of the function's docstring."""
        return _first_line(inspect.getdoc(self.function))


def _group(group: str) -> ModuleType:
    if group not in GROUPS:
        raise ValueError(f"unknown command group {group!r}; the groups are {', '.join(GROUPS)}")
    return importlib.import_module(f"pdgen.commands.{group}")


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
    return _first_line(inspect.getdoc(_group(group)))


def subcommands(group: str) -> list[Subcommand]:
    """The subcommands of a group, in the order of its `COMMANDS`."""
    return [Subcommand(function.__name__.replace("_", "-"), function) for function in _group(group).COMMANDS]


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


def run(group: str, argv: list[str], debug: bool = False) -> None:
    """Parse `argv` (what follows `pdgen <group>`) and call the chosen subcommand.

    A subcommand that returns something other than None has it printed. A `UserError` it raises ends the
    command with its message and exit status 1, without a traceback (with one when `debug`). A group with
    a single subcommand may leave its name out (`pdgen view DIR` is `pdgen view html DIR`).

    Raises:
        SystemExit: on `--help`, a usage error or a user error.
    """
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(prog=f"pdgen {group}", description=inspect.getdoc(_group(group)))
    functions: dict[str, Callable] = {}
    choices = parser.add_subcommands(dest="command")
    for command in subcommands(group):
        functions[command.name] = function = command.function
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
    with exit_on_user_error(f"pdgen {group} {chosen}", debug):
        result = functions[chosen](*leading, **arguments)
    if result is not None:
        print(result)
