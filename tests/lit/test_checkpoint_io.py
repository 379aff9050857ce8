"""Checkpoint files: a kill mid-save leaves the previous `last.ckpt` loadable, whatever filesystem $TMPDIR is
on; a killed save's temporary file is removed by the next run; a damaged `--ckpt_path` is named."""

import io
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

import pytest
import torch
from world_packs import fit_args

from pdgen.cli import main
from pdgen.lit.checkpoint_io import AtomicCheckpointIO, CheckpointError, load_checkpoint_file


class Killed(BaseException):
    """The process dying: nothing catches it, no clean-up of the writer's own runs."""


@pytest.fixture
def other_filesystem(tmp_path):
    """A directory on another filesystem than `tmp_path` (a tmpfs), to stand in for a $TMPDIR there."""
    candidates = ["/dev/shm", "/run/user/%d" % os.getuid()]  # noqa: UP031
    for root in candidates:
        if os.path.isdir(root) and os.stat(root).st_dev != os.stat(tmp_path).st_dev:
            path = tempfile.mkdtemp(dir=root)
            yield path
            shutil.rmtree(path)
            return
    pytest.skip(f"no writable directory on another filesystem than {tmp_path} (tried {candidates})")


def test_a_kill_mid_save_leaves_a_loadable_last_ckpt_with_tmpdir_elsewhere(
    every_step_config, tmp_path, other_filesystem, monkeypatch
):
    """`pdgen fit` saves `last.ckpt` after step 1, then the process dies while writing step 2's.

    The kill is simulated in-process: the second write of `last.ckpt`'s bytes breaks off half way with
    `Killed`, whichever way they travel (a copy across filesystems, as a move from $TMPDIR does; or
    `torch.save` into a file, pdgen's temporary beside `last.ckpt`). $TMPDIR is a directory on another
    filesystem (`tempfile.tempdir`, which every `tempfile` call without `dir=` uses).
    """
    monkeypatch.setattr(tempfile, "tempdir", other_filesystem)
    writes_of_last = []

    def dies_now(file) -> bool:
        """Whether this write is into `last.ckpt` (or pdgen's temporary for it) for the second time."""
        name = os.path.basename(os.readlink(f"/proc/self/fd/{file.fileno()}"))
        writes_of_last.extend([name] if "last.ckpt" in name else [])
        return "last.ckpt" in name and len(writes_of_last) == 2

    def copy(source, target, *args, **kwargs):  # shutil's copy loops (a move across filesystems)
        data = source.read()
        if not dies_now(target):
            return target.write(data)
        target.write(data[: len(data) // 2])
        target.flush()
        raise Killed

    real_save = torch.save

    def save(obj, file, *args, **kwargs):
        real_save(obj, file, *args, **kwargs)
        if not isinstance(file, io.BytesIO) and dies_now(file):  # Lightning's in-memory buffer is not a file
            file.truncate(file.tell() // 2)
            file.flush()
            raise Killed

    monkeypatch.setattr(shutil, "copyfileobj", copy)
    monkeypatch.setattr(shutil, "_fastcopy_sendfile", copy)
    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(Killed):
        main(fit_args(tmp_path, "-c", str(every_step_config), "--trainer.max_steps", "3"))
    last = load_checkpoint_file(tmp_path / "checkpoints" / "last.ckpt")
    assert last["global_step"] == 1
    assert os.listdir(other_filesystem) == []  # nothing was staged in $TMPDIR


@pytest.mark.slow
def test_a_killed_save_leaves_a_temporary_that_the_next_run_removes(tmp_path):
    # A real SIGKILL half way through writing the second checkpoint, in a child process.
    target = tmp_path / "checkpoints" / "last.ckpt"
    child = textwrap.dedent(
        """
        import io, os, signal, sys, torch
        from pdgen.lit.checkpoint_io import AtomicCheckpointIO

        writer, target = AtomicCheckpointIO(), sys.argv[1]
        writer.save_checkpoint({"global_step": 1, "w": torch.ones(100_000)}, target)
        real_save = torch.save

        def half_then_die(obj, file):
            buffer = io.BytesIO()
            real_save(obj, buffer)
            file.write(buffer.getvalue()[: buffer.tell() // 2])
            file.flush()
            os.kill(os.getpid(), signal.SIGKILL)

        torch.save = half_then_die
        writer.save_checkpoint({"global_step": 2, "w": torch.zeros(100_000)}, target)
        """
    )
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    command = [sys.executable, "-c", child, str(target)]
    died = subprocess.run(command, env=env, capture_output=True, timeout=300)
    assert died.returncode == -9, died.stderr.decode()[-2000:]
    assert load_checkpoint_file(target)["global_step"] == 1
    [left] = target.parent.glob(".last.ckpt.*.tmp")
    assert left.stat().st_size > 0
    AtomicCheckpointIO().save_checkpoint({"global_step": 3}, target)  # the next run's first save
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.ckpt"]


@pytest.mark.parametrize(
    ("content", "why"),
    [(b"", "is empty"), ("cut", "is truncated or damaged"), (b"step: 40\n", "is not a torch checkpoint")],
)
def test_an_unreadable_checkpoint_names_the_file_and_what_is_wrong(tmp_path, content, why):
    path = tmp_path / "bad.ckpt"
    if content == "cut":
        AtomicCheckpointIO().save_checkpoint({"w": torch.ones(1000)}, path)
        content = path.read_bytes()[:2000]
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=f"{path} {why}"):
        load_checkpoint_file(path)


def test_fit_with_a_truncated_ckpt_path_says_which_file_and_why(world_packs, tmp_path):
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"w": torch.ones(1000)}, path)
    path.write_bytes(path.read_bytes()[:1500])
    with pytest.raises(SystemExit, match=f"^pdgen fit: checkpoint {path} is truncated or damaged"):
        main([*fit_args(tmp_path, "--trainer.max_steps", "1"), "--ckpt_path", str(path)])
