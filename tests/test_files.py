"""`pdgen.files`: atomic writes that leave readable files, and nothing behind when they fail."""

from __future__ import annotations

import pytest

from pdgen.files import MODE, write_atomic


def test_a_written_file_is_whole_and_readable_by_others(tmp_path) -> None:
    target = tmp_path / "new" / "folder" / "page.html"
    write_atomic(target, b"<html>")
    write_atomic(target, lambda file: file.write(b"<html></html>"))
    assert target.read_bytes() == b"<html></html>"
    assert target.stat().st_mode & 0o777 == MODE == 0o644
    assert [path.name for path in target.parent.iterdir()] == ["page.html"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path) -> None:
    target = tmp_path / "report.json"
    target.write_bytes(b"old")

    def fail(file) -> None:
        file.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_atomic(target, fail)
    assert target.read_bytes() == b"old" and [path.name for path in tmp_path.iterdir()] == ["report.json"]
