"""User errors end a command with their message; every other exception keeps its traceback."""

from __future__ import annotations

import numpy as np
import pytest

from pdgen.cli import main
from pdgen.commands import view
from pdgen.errors import UserError, exit_on_user_error


def explode(kind: str) -> None:
    """Raise a user error or numpy's ValueError.

    Args:
        kind: `user` or `numpy`.
    """
    if kind == "user":
        raise UserError("--size 3 is too small; give at least 8")
    np.zeros(2).reshape(3)  # ValueError: cannot reshape array of size 2 into shape (3,)


@pytest.fixture
def exploding(monkeypatch: pytest.MonkeyPatch) -> None:
    """`pdgen view explode KIND`, a subcommand that raises."""
    monkeypatch.delenv("PDGEN_DEBUG", raising=False)
    monkeypatch.setattr(view, "COMMANDS", (explode,))


def test_a_user_error_is_its_message_naming_the_command(exploding) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["view", "explode", "user"])
    assert exited.value.code == "pdgen view explode: --size 3 is too small; give at least 8"


def test_any_other_error_keeps_its_traceback_a_numpy_value_error_too(exploding) -> None:
    with pytest.raises(ValueError, match="cannot reshape array of size 2") as raised:
        main(["view", "explode", "numpy"])
    assert not isinstance(raised.value, UserError)


def test_debug_shows_the_traceback_of_a_user_error(exploding, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UserError, match="too small"):
        main(["--debug", "view", "explode", "user"])
    monkeypatch.setenv("PDGEN_DEBUG", "1")
    with pytest.raises(UserError, match="too small"):
        main(["view", "explode", "user"])


def test_exit_on_user_error_passes_other_exceptions_untouched(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PDGEN_DEBUG", raising=False)
    with pytest.raises(SystemExit, match="^pdgen x: bad$"), exit_on_user_error("pdgen x"):
        raise UserError("bad")
    with pytest.raises(KeyError), exit_on_user_error("pdgen x"):
        raise KeyError("not a user error")
    with exit_on_user_error("pdgen x"):
        pass
