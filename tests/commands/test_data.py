"""`pdgen data build conflict|alignment` and `pdgen data stats`: the reasoning subsets from the command line,
and the paper's Table 1 for any built data."""

import json
import re
import shutil

import pytest

from pdgen.cli import main
from pdgen.testing.damage import rewrite_shard

SMALL = ["--n", "6", "--val_size", "2", "--samples_per_shard", "4"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A data folder as the recipe lays it out: a symbolic conflict set and an alignment set."""
    root = tmp_path_factory.mktemp("data")
    main(["data", "build", "conflict", "--out", str(root / "conflict" / "symbolic"), *SMALL])
    main(["data", "build", "alignment", "--out", str(root / "alignment"), *SMALL])
    return root


def test_build_conflict_prints_its_statistics(data, capsys):
    manifest = json.loads((data / "conflict" / "symbolic" / "manifest.json").read_text())
    assert manifest["subset"] == "conflict" and manifest["mode"] == "symbolic"
    stats = manifest["stats"]
    assert stats["total_samples"] == 6 and stats["positive_samples"] + stats["negative_samples"] == 6
    main(["data", "stats", str(data / "conflict" / "symbolic")])
    table = capsys.readouterr().out
    assert re.search(rf"\| Negative samples +\| +{stats['negative_samples']} \|", table)
    assert re.search(r"\| Total samples +\| +6 \|", table)


def test_stats_prints_one_table_per_subset_found_below_a_folder(data, capsys):
    main(["data", "stats", str(data)])
    out = capsys.readouterr().out
    assert out.count("| Total samples") == 2
    assert "alignment (" in out and "conflict (" in out and "Positive samples" in out


def test_stats_counts_shards_brought_without_a_manifest(data, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    for shard in (data / "alignment").glob("train-*.tar"):
        shutil.copy(shard, mine)
    main(["data", "stats", str(mine)])
    counted = capsys.readouterr().out
    main(["data", "stats", str(data / "alignment")])
    listed = capsys.readouterr().out
    # The same figures, by counting inspections instead of reading the manifest.
    assert table_rows(counted) == table_rows(listed)
    assert "recount: 6 training samples read (no manifest to compare with); no sample skipped" in counted


def test_a_recount_flags_samples_missing_against_the_manifest(data, tmp_path, capsys):
    copy = tmp_path / "alignment"
    shutil.copytree(data / "alignment", copy)
    rewrite_shard(copy / "train-000000.tar", keep=1)  # a valid tar cut after its first sample (of 4)
    main(["data", "stats", str(copy), "--recount"])
    out = capsys.readouterr().out
    assert re.search(r"\| Total samples +\| +3 \|", out)
    assert "recount: 3 of the manifest's 6 training samples read (3 MISSING)" in out
    assert "3 sample(s) skipped: 3 truncated" in out


def table_rows(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("|")]


def test_build_refuses_a_checkpoint_that_is_not_there(tmp_path):
    with pytest.raises(SystemExit, match="is not a file"):
        main(
            [
                "data",
                "build",
                "conflict",
                "--out",
                str(tmp_path / "c"),
                "--from_ckpt",
                str(tmp_path / "no.ckpt"),
            ]
        )


def test_build_refuses_conflict_options_for_another_subset(tmp_path):
    with pytest.raises(SystemExit, match="options of the conflict subset"):
        main(["data", "build", "alignment", "--out", str(tmp_path / "a"), "--from_ckpt", "x.ckpt"])


def test_a_prompt_file_that_does_not_read_is_a_short_error_naming_its_line(tmp_path):
    with pytest.raises(SystemExit, match=r"^pdgen data parse: cannot read --file \S+missing.txt"):
        main(["data", "parse", "--file", str(tmp_path / "missing.txt")])
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "a photo of a cat"}\nnot JSON\n')
    with pytest.raises(SystemExit, match=r'prompts.jsonl:2: expected a JSON object with a "prompt" on each'):
        main(["data", "parse", "--file", str(prompts)])
