"""Shared piece of the tool tests: a script under `tools/` imported as a module (importable as `toolkit`)."""

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

TOOLS = Path(__file__).parents[2] / "tools"


def imported_tool(name: str) -> Iterator[ModuleType]:
    """Yields `tools/<name>.py` as the module `<name>` for as long as a fixture holds it.

    The module is registered in `sys.modules` while in use: its dataclasses look their module up by name.
    """
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[name]
