"""Atomic writes: the destination holds the old file or the whole new one, and temporaries do not leak."""

import pytest

from pdgen.io import MODE, atomic_path, atomic_write, remove_stale_temporaries, write_atomic


def test_the_file_appears_whole_from_a_temporary_in_its_own_directory(tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.setenv("TMPDIR", str(elsewhere))  # $TMPDIR is never used: it may be another filesystem
    target = tmp_path / "out" / "data.bin"
    target.parent.mkdir()
    with atomic_write(target) as file:
        file.write(b"abc")
        [temporary] = target.parent.iterdir()
        assert temporary.name.startswith(".data.bin.") and temporary.name.endswith(".tmp")
        assert not target.exists()
    assert target.read_bytes() == b"abc" and list(elsewhere.iterdir()) == []
    assert [p.name for p in target.parent.iterdir()] == ["data.bin"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "data.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk full"), atomic_write(target) as file:
        file.write(b"half")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["data.bin"]


def test_stale_temporaries_of_matching_names_are_removed(tmp_path):
    stale = [tmp_path / ".last.ckpt.k2j3h4.tmp", tmp_path / ".epoch=0-step=4.ckpt.a8s7d6.tmp"]
    kept = [tmp_path / "last.ckpt", tmp_path / ".train-000000.tar.x1.tmp", tmp_path / "notes.tmp"]
    for path in stale + kept:
        path.write_bytes(b"x")
    assert remove_stale_temporaries(tmp_path, "*.ckpt") == sorted(stale)
    assert sorted(tmp_path.iterdir()) == sorted(kept)
    assert remove_stale_temporaries(tmp_path / "missing") == []


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


def test_a_writer_that_takes_a_file_name_writes_through_the_same_temporary(tmp_path) -> None:
    target = tmp_path / "weights" / "ema.safetensors"
    with atomic_path(target) as temporary:
        assert temporary.parent == target.parent and temporary.name.startswith(".ema.safetensors.")
        temporary.write_bytes(b"tensors")  # as safetensors' save_file(tensors, name) does
        assert not target.exists()
    assert target.read_bytes() == b"tensors" and target.stat().st_mode & 0o777 == MODE
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(target) as temporary:
        temporary.write_bytes(b"half")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"tensors" and [p.name for p in target.parent.iterdir()] == [target.name]
