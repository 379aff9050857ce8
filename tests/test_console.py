"""`pdgen.console`: a counter that writes plain lines where a bar would be one unreadable line."""

from __future__ import annotations

import pytest
from tqdm import tqdm

from pdgen import console
from pdgen.console import LineProgress, counter, duration


@pytest.mark.parametrize(("seconds", "text"), [(0.4, "0s"), (42, "42s"), (185, "3m05s"), (3720, "1h02m")])
def test_durations_read_as_people_say_them(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_a_line_at_the_start_at_most_one_per_interval_and_one_at_the_end(capsys) -> None:
    now = [100.0]
    desc = "building multiturn in data/multiturn"
    bar = LineProgress(1000, desc, "trajectories", every_s=30, clock=lambda: now[0])
    for _ in range(1000):
        now[0] += 0.125  # 8 items a second: 125 s in all
        bar.update()
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == f"{desc}: 1,000 trajectories to do"
    assert lines[1] == (
        f"{desc}: 240/1,000 trajectories (24%), 8.0 trajectories/s, 30s so far, about 1m35s left"
    )
    assert len(lines) == 6 and lines[-1] == f"{desc}: 1,000 trajectories in 2m05s"


def test_counter_draws_a_bar_in_a_terminal_and_writes_lines_elsewhere(monkeypatch, capsys) -> None:
    assert isinstance(counter(3, "x", "items"), LineProgress)  # pytest's capture is not a terminal
    monkeypatch.setattr(console, "stderr_is_terminal", lambda: True)
    assert isinstance(counter(3, "x", "items"), tqdm)
    assert isinstance(counter(3, "x", "items", enabled=False), tqdm)
    capsys.readouterr()
