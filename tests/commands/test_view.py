"""`pdgen view html` on prediction folders: trajectories, costs, scores, and samples without a trajectory.

(Shard folders and `.tar` shards are covered in tests/test_cli.py.)"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

from pdgen.cli import main
from pdgen.eval.predictions import read_predictions


def page_of(path: Path, tmp_path: Path, *options: str) -> str:
    out = tmp_path / "page.html"
    main(["view", "html", str(path), "--out", str(out), *options])
    return out.read_text()


def sections(page: str) -> list[str]:
    return re.findall(r"<section>.*?</section>", page, flags=re.S)


def test_a_prediction_folder_shows_each_sample_with_its_costs(predictions, tmp_path, capsys) -> None:
    page = page_of(predictions, tmp_path)
    shown = sections(page)
    assert len(shown) == 6 and "00000 · sample 0 · single_object" in shown[0]
    first = read_predictions(predictions)[0]
    assert first.folder.metadata["prompt"] in shown[0]
    # Every drawn image inline (a page with no server and no other file), the answer outlined.
    drawn = len(list(first.trajectory.glob("*.png")))
    assert shown[0].count("data:image/png;base64,") == drawn and shown[0].count('class="image answer"') == 1
    assert "sampling steps: 100" in shown[0] and "mode: process" in shown[0]
    assert "drafted tokens kept: 12 of 30" in shown[0]
    assert "Mean cost per sample (6 samples)" in page and "sampling steps 100.00" in page
    assert len(sections(page_of(predictions, tmp_path, "--limit", "2"))) == 2


def test_after_eval_shapes_the_page_lands_in_the_folder_with_verdicts_and_rounded_costs(
    predictions, capsys
) -> None:
    # The README's order: score the folder (the report goes beside the images), then look at it.
    costs_file = next(predictions.glob("00000/trajectory/0000/costs.json"))
    costs = {**json.loads(costs_file.read_text()), "wall_time_s": 1.5479133799999545}
    costs_file.write_text(json.dumps(costs))
    main(["eval", "shapes", "--images", str(predictions)])
    capsys.readouterr()
    main(["view", "html", str(predictions)])
    page = predictions / "trajectories.html"
    assert capsys.readouterr().out.strip() == str(page)
    assert page.stat().st_mode & 0o777 == 0o644  # readable by others, like any file the user makes
    first = sections(page.read_text())[0]
    assert "Score: correct" in first and "wall time (s): 1.55" in first and "1.5479" not in first


def test_view_dir_is_view_html_dir(predictions, tmp_path, capsys) -> None:
    # `view` has one subcommand, so its name may be left out: `pdgen view DIR`.
    main(["view", str(predictions), "--out", str(tmp_path / "short.html")])
    assert (tmp_path / "short.html").read_text() == page_of(predictions, tmp_path)


def test_scores_from_a_results_file_sit_beside_their_samples(predictions, tmp_path, capsys) -> None:
    first = str(predictions / "00000" / "samples" / "0000.png")
    rows = [
        {"filename": first, "tag": "single_object", "correct": True},
        {"filename": "elsewhere/00001/samples/0000.png", "tag": "two_object", "correct": False,
         "reason": "expected circle>=1, found 0"},
    ]  # fmt: skip
    (predictions / "results.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    shown = sections(page_of(predictions, tmp_path))  # PATH/results.jsonl is read by default
    assert "Score: correct" in shown[0]
    assert "Score: wrong" in shown[1] and "expected circle&gt;=1, found 0" in shown[1]
    assert "Score" not in shown[2]
    # An eval report works too, and WISE rows show their WiScore.
    report = tmp_path / "report.json"
    wise_row = {
        "filename": rows[0]["filename"],
        "wiscore": 0.9,
        "consistency": 2,
        "realism": 1,
        "aesthetic_quality": 2,
    }
    report.write_text(json.dumps({"rows": [wise_row]}))
    page = page_of(predictions, tmp_path, "--results", str(report))
    assert "WiScore 0.900" in sections(page)[0] and "Mean WiScore 0.900 over 1 images" in page


def test_a_sample_without_a_trajectory_shows_its_generation_record(tmp_path, capsys) -> None:
    folder = tmp_path / "out" / "00000"
    (folder / "samples").mkdir(parents=True)
    (folder / "metadata.jsonl").write_text(json.dumps({"prompt": "a red circle"}))
    Image.new("RGB", (8, 8), "red").save(folder / "samples" / "0000.png")
    steps = folder / "trajectory" / "0000"
    steps.mkdir(parents=True)
    Image.new("RGB", (8, 8), "red").save(steps / "00.png")
    record = {
        "prompt": "a red circle",
        "text": "<|vision_start|>",
        "mode": "single_pass",
        "final_image": "00.png",
    }
    (steps / "generation.json").write_text(json.dumps(record))
    [shown] = sections(page_of(tmp_path / "out", tmp_path))
    assert (
        "a red circle" in shown
        and "Generation (no trajectory)" in shown
        and "&lt;|vision_start|&gt;" in shown
    )
    assert shown.count("data:image/png;base64,") == 1 and shown.count('class="image answer"') == 1
    # With nothing drawn, the final image (the writer's blank stand-in) is what the page shows.
    (steps / "00.png").unlink()
    (steps / "generation.json").write_text(
        json.dumps({**record, "final_image": None, "error": "text budget"})
    )
    [shown] = sections(page_of(tmp_path / "out", tmp_path))
    assert "error: text budget" in shown and shown.count('class="image answer"') == 1


def test_an_empty_prediction_folder_is_an_error(predictions, tmp_path) -> None:
    empty = tmp_path / "empty"
    (empty / "00000").mkdir(parents=True)
    shutil.copy(predictions / "00000" / "metadata.jsonl", empty / "00000")
    with pytest.raises(SystemExit, match="no trajectories in"):
        main(["view", "html", str(empty), "--out", str(tmp_path / "page.html")])


def test_one_damaged_sample_is_named_on_the_page_and_the_rest_are_shown(
    predictions, tmp_path, capsys
) -> None:
    from pdgen.testing.damage import decompression_bomb_png

    damaged = Path(shutil.copytree(predictions, tmp_path / "damaged"))
    first = read_predictions(damaged)[0]
    (first.trajectory / "00.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")  # a truncated image
    (read_predictions(damaged)[1].trajectory / "00.png").write_bytes(decompression_bomb_png())
    shown = sections(page_of(damaged, tmp_path))
    assert len(shown) == 6
    for bad in shown[:2]:
        assert "Not shown: this sample cannot be read" in bad and "00.png" in bad
    assert all("data:image/png;base64," in good for good in shown[2:])
