"""Shards: write trajectories atomically, read them back split across readers, skip corrupt samples loudly."""

import io
import json
import logging
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from pdgen.data.shards import (
    ReaderPart,
    ShardSetWriter,
    ShardSource,
    SubsetStats,
    read_manifest,
    split_shards,
    stats_table,
    write_manifest,
)
from pdgen.data.skips import SkipCounter
from pdgen.testing.damage import decompression_bomb_png, rewrite_shard
from pdgen.trajectory import Inspect, Plan, Refine, Sketch, Trajectory


def trajectory(number: int) -> Trajectory:
    """A small trajectory whose prompt and image colour tell which one it is."""
    color = (number * 37 % 256, number * 91 % 256, 200)
    return Trajectory(
        f"prompt {number}",
        [Plan(f"Add thing {number}.", "One thing."), Sketch(Image.new("RGB", (8, 8), color))],
    )


def write_split(root: Path, count: int, per_shard: int, split: str = "train") -> dict:
    with ShardSetWriter(root, split, per_shard) as writer:
        for number in range(count):
            writer.write(f"s{number:04d}", trajectory(number))
    return writer.entry


def read_all(source: ShardSource, epoch: int = 0, part: ReaderPart | None = None) -> list[tuple[str, str]]:
    return [(where, t.prompt) for where, t in source.trajectories(epoch, part or ReaderPart())]


def rewrite_member(shard: Path, member: str, change) -> None:
    """Replace the bytes of one member of a shard with ``change(bytes)`` (corrupting it on purpose)."""
    with tarfile.open(shard) as tar:
        members = [(info, tar.extractfile(info).read()) for info in tar if info.isfile()]
    with tarfile.open(shard, "w") as tar:
        for info, data in members:
            if info.name == member:
                data = change(data)
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_round_trip_in_order(tmp_path):
    entry = write_split(tmp_path, count=7, per_shard=3)
    assert entry == {
        "shards": [
            {"name": "train-000000.tar", "samples": 3},
            {"name": "train-000001.tar", "samples": 3},
            {"name": "train-000002.tar", "samples": 1},
        ],
        "samples": 7,
    }
    shards = [tmp_path / s["name"] for s in entry["shards"]]
    read = list(ShardSource(shards, shuffle=False).trajectories(0))
    assert [where for where, _ in read][:2] == ["train-000000.tar/s0000", "train-000000.tar/s0001"]
    assert [t for _, t in read] == [trajectory(n) for n in range(7)]  # images compare pixel by pixel


def test_every_step_kind_survives_a_shard(tmp_path):
    image = Image.new("RGB", (8, 8), "red")
    full = Trajectory(
        "a red square",
        [Plan("Add a square.", "A square."), Sketch(image), Inspect("Wrong colour.", "Make it red."),
         Refine(Plan("Make it red.", "A red square."), image)],
        input_image=Image.new("L", (8, 8), 128),
    )  # fmt: skip
    with ShardSetWriter(tmp_path, "train", 10) as writer:
        writer.write("only", full)
    [(_, read)] = ShardSource([tmp_path / "train-000000.tar"]).trajectories(0)
    assert read == full


def test_same_samples_give_identical_shards(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        write_split(tmp_path / name, 4, 4)
    assert (tmp_path / "a/train-000000.tar").read_bytes() == (tmp_path / "b/train-000000.tar").read_bytes()


def test_a_failed_write_leaves_no_partial_shard(tmp_path):
    with pytest.raises(RuntimeError, match="disk full"), ShardSetWriter(tmp_path, "train", 3) as writer:
        for number in range(5):
            writer.write(f"s{number}", trajectory(number))
            if number == 4:
                raise RuntimeError("disk full")
    # The full first shard landed; the second, half written, is gone, temporary file included.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train-000000.tar"]
    assert writer.entry["samples"] == 3


def test_a_failed_manifest_write_leaves_the_old_one(tmp_path):
    write_manifest(tmp_path, {"subset": "x", "splits": {}})
    with pytest.raises(TypeError):
        write_manifest(tmp_path, {"subset": "y", "splits": {}, "bad": object()})  # not JSON-serialisable
    assert read_manifest(tmp_path)["subset"] == "x"
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def test_manifest_round_trip_and_checks(tmp_path):
    assert read_manifest(tmp_path) is None  # nothing built yet
    entry = write_split(tmp_path, 2, 5)
    write_manifest(tmp_path, {"subset": "multiturn", "splits": {"train": entry}})
    manifest = read_manifest(tmp_path)
    assert manifest["format"] == "pdgen.shards/1"
    assert split_shards(tmp_path, manifest, "train") == [tmp_path / "train-000000.tar"]
    with pytest.raises(ValueError, match="no split 'val'"):
        split_shards(tmp_path, manifest, "val")
    (tmp_path / "train-000000.tar").unlink()
    with pytest.raises(ValueError, match="shard 'train-000000.tar' of split 'train' is missing"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "other/1"}))
    with pytest.raises(ValueError, match="format is 'other/1'"):
        read_manifest(tmp_path)


def test_stats_table_follows_table_1():
    stats = SubsetStats()
    stats.add(trajectory(0))
    stats.add(Trajectory("a much longer prompt here", [*trajectory(1).steps, *trajectory(2).steps]))
    table = stats.table()
    assert table == {
        "total_samples": 2,
        "mean_prompt_chars": 16.5,  # (8 + 25) / 2
        "mean_prompt_words": 3.5,
        "mean_images_per_sample": 1.5,
        "max_images_per_sample": 2,
        "positive_samples": None,
        "negative_samples": None,
    }
    text = stats_table(table)
    assert "| Average images per sample" in text and "Positive" not in text  # null rows left out


@pytest.mark.parametrize("shards, per_shard", [(6, 4), (2, 12)], ids=["by-shard", "by-sample"])
def test_readers_share_every_sample_exactly_once(tmp_path, shards, per_shard):
    entry = write_split(tmp_path, shards * per_shard, per_shard)
    source = ShardSource([tmp_path / s["name"] for s in entry["shards"]], seed=3, shuffle_buffer=5)
    parts = [ReaderPart(rank, 2, worker, 2) for rank in range(2) for worker in range(2)]
    for epoch in (0, 1):
        seen = [prompt for part in parts for _, prompt in read_all(source, epoch, part)]
        assert sorted(seen) == sorted(f"prompt {n}" for n in range(shards * per_shard))


def test_shuffle_is_seeded_per_epoch(tmp_path):
    entry = write_split(tmp_path, 24, 4)
    shards = [tmp_path / s["name"] for s in entry["shards"]]
    source = ShardSource(shards, seed=1, shuffle_buffer=8)
    assert read_all(source, 0) == read_all(ShardSource(shards, seed=1, shuffle_buffer=8), 0)
    assert read_all(source, 0) != read_all(source, 1)
    assert read_all(source, 0) != read_all(ShardSource(shards, seed=2, shuffle_buffer=8), 0)
    assert sorted(read_all(source, 1)) == sorted(read_all(source, 0))


def test_corrupt_samples_are_skipped_counted_and_named(tmp_path, caplog):
    write_split(tmp_path, 6, 6)
    shard = tmp_path / "train-000000.tar"
    rewrite_member(shard, "s0001.00.png", lambda data: data[: len(data) // 2])  # truncated PNG
    rewrite_member(shard, "s0003.trajectory.json", lambda data: data[:-5])  # JSON cut short
    rewrite_member(shard, "s0004.trajectory.json", lambda data: data.replace(b'"plan"', b'"plot"'))
    counter = SkipCounter()
    with caplog.at_level(logging.WARNING, logger="pdgen.data.shards"):
        read = read_all(ShardSource([shard], skipped=counter))
    assert [prompt for _, prompt in read] == ["prompt 0", "prompt 2", "prompt 5"]  # iteration went on
    assert counter.by_cause() == {"corrupt": 2, "truncated": 0, "too_long": 0, "unreadable_image": 1}
    warnings = "\n".join(r.getMessage() for r in caplog.records)
    for key, why in [("s0001", "00.png is not a readable PNG"), ("s0003", "not valid JSON"),
                     ("s0004", "unknown step kind 'plot'")]:  # fmt: skip
        assert f"train-000000.tar/{key}" in warnings and why in warnings


def test_a_truncated_shard_counts_and_the_next_shard_is_read(tmp_path, caplog):
    entry = write_split(tmp_path, 6, 3)
    first, second = (tmp_path / s["name"] for s in entry["shards"])
    first.write_bytes(first.read_bytes()[:2000])  # cut inside the second sample
    counter = SkipCounter()
    with caplog.at_level(logging.WARNING, logger="pdgen.data.shards"):
        read = read_all(ShardSource([first, second], shuffle=False, skipped=counter))
    assert [prompt for _, prompt in read] == ["prompt 0", "prompt 3", "prompt 4", "prompt 5"]
    assert counter.by_cause()["truncated"] == 1  # no sample counts to compare with: one per break
    assert "train-000000.tar: the shard breaks off" in caplog.text


@pytest.mark.parametrize("readers", [1, 3])  # shards dealt out whole; samples dealt out (3 readers, 2 shards)
def test_a_shard_cut_at_a_sample_boundary_counts_every_sample_it_lost(tmp_path, caplog, readers):
    entry = write_split(tmp_path, 8, 4)
    shards = [tmp_path / s["name"] for s in entry["shards"]]
    rewrite_shard(shards[0], keep=1)  # a valid tar, three samples short
    counter = SkipCounter()
    counts = [s["samples"] for s in entry["shards"]]
    source = ShardSource(shards, shuffle=False, skipped=counter, samples_per_shard=counts)
    with caplog.at_level(logging.WARNING, logger="pdgen.data.shards"):
        parts = [ReaderPart(worker=i, num_workers=readers) for i in range(readers)]
        read = [sample for part in parts for sample in read_all(source, 0, part)]
    assert len(read) == 5 and counter.by_cause()["truncated"] == 3  # each lost sample counted once
    assert "train-000000.tar: the shard ends after 1 of its 4 samples" in caplog.text


def test_a_shard_cut_inside_a_member_counts_the_whole_loss(tmp_path):
    entry = write_split(tmp_path, 8, 4)
    first, second = (tmp_path / s["name"] for s in entry["shards"])
    first.write_bytes(first.read_bytes()[:2000])  # breaks off inside the second sample
    counter = SkipCounter()
    source = ShardSource([first, second], shuffle=False, skipped=counter, samples_per_shard=[4, 4])
    assert len(read_all(source)) == 5
    assert counter.total == 3 and counter.by_cause()["truncated"] >= 2  # the half sample may count as corrupt


def test_a_decompression_bomb_is_skipped_counted_and_named(tmp_path, caplog):
    write_split(tmp_path, 3, 3)
    shard = tmp_path / "train-000000.tar"
    rewrite_member(shard, "s0001.00.png", lambda _: decompression_bomb_png())
    counter = SkipCounter()
    with caplog.at_level(logging.WARNING, logger="pdgen.data.shards"):
        read = read_all(ShardSource([shard], skipped=counter))
    assert [prompt for _, prompt in read] == ["prompt 0", "prompt 2"]
    assert counter.by_cause()["unreadable_image"] == 1
    assert "train-000000.tar/s0001" in caplog.text and "00.png is not a readable PNG" in caplog.text


def test_the_next_build_removes_the_temporary_shard_of_a_killed_one(tmp_path):
    killed = tmp_path / ".train-000003.tar.q8w7e6.tmp"  # what a `kill -9` during a shard write leaves
    killed.write_bytes(b"half a shard")
    other = tmp_path / ".val-000000.tar.q8w7e6.tmp"
    other.write_bytes(b"half a shard")
    write_split(tmp_path, 2, 2)
    assert not killed.exists() and other.exists()  # the train writer cleans its own split's
