"""`pdgen eval shapes|geneval|wise`, run in-process: the printed table, the JSON report, the cost figures."""

from __future__ import annotations

import inspect
import json
import sys
import types
from pathlib import Path

import pytest
from PIL import Image

from pdgen.cli import main
from pdgen.commands import eval as eval_commands
from pdgen.eval.samples import write_prompt_folder
from pdgen.eval.wise import DEFAULT_JUDGE
from pdgen.testing.fake_openai import FakeOpenAI, Reply

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    main(["eval", *argv])
    return capsys.readouterr().out


def table(text: str) -> dict[str, list[str]]:
    """The printed table's rows by first cell."""
    return {line.split()[0]: line.split()[1:] for line in text.splitlines() if line.strip()}


def test_shapes_on_ground_truth_prints_tags_and_writes_a_report(capsys, tmp_path) -> None:
    images, out = tmp_path / "images", tmp_path / "report.json"
    text = run(
        capsys,
        "shapes",
        "--images",
        str(images),
        "--truth",
        "--per_tag",
        "1",
        "--samples",
        "1",
        "--out",
        str(out),
    )
    images_part, process_part = text.split("\nprocess ", 1)
    rows, process_rows = table(images_part), table(process_part.split("process by tag", 1)[1])
    for tag in ("single_object", "two_object", "counting", "colors", "position", "color_attr"):
        assert rows[tag] == ["1.000", "1", "0.21-1.00"]  # one image: its Wilson 95 % interval is wide
        assert process_rows[tag][:2] == ["1.000", "1"]  # the world's own plans: planned right
    assert rows["overall"][0] == "1.000" and rows["image_mean"] == ["1.000", "6"]
    assert "cost per sample" not in text  # the world's renders record no costs
    report = json.loads(out.read_text())
    assert report["summary"]["overall"] == 1.0 and report["costs"] is None and len(report["rows"]) == 6
    # --truth writes each rollout as the sample's trajectory, as `pdgen predict` does.
    assert len(list(images.glob("*/trajectory/0000/trajectory.json"))) == 6


def test_shapes_prints_the_costs_of_a_prediction_folder(capsys, predictions) -> None:
    rows = table(run(capsys, "shapes", "--images", str(predictions)))
    # Without --out the report lands beside the images, where `pdgen view html` looks for verdicts.
    assert rows["report:"] == [str(predictions / "eval_shapes.json")]
    assert json.loads((predictions / "eval_shapes.json").read_text())["summary"]["overall"] == 1.0
    assert rows["overall"][0] == "1.000"
    # conftest's costs: 2 images, 100 sampling steps, 300 forward passes, 40 text tokens, 1.5 s per sample
    assert rows["images"] == ["drawn", "2.00"] and rows["sampling"] == ["steps", "100.00"]
    assert rows["forward"] == ["passes", "300.00"] and rows["text"] == ["tokens", "40.00"]
    assert rows["wall"] == ["time", "(s)", "1.50"]


def test_geneval_with_a_detector_back_end(capsys, predictions, monkeypatch, tmp_path) -> None:
    class SeesNothing:
        def detect(self, image):
            return []

        def classify_colors(self, image, detections, name):
            return []

    module = types.ModuleType("fake_backends")
    module.SeesNothing = SeesNothing
    monkeypatch.setitem(sys.modules, "fake_backends", module)
    out = tmp_path / "report.json"
    text = run(
        capsys,
        "geneval",
        "--images",
        str(predictions),
        "--detector",
        "fake_backends:SeesNothing",
        "--out",
        str(out),
    )
    assert table(text)["overall"][0] == "0.000"
    report = json.loads(out.read_text())
    assert report["detector"] == "fake_backends:SeesNothing" and report["rows"][0]["reason"].startswith(
        "expected"
    )
    # The world detector is a back end too, built with no arguments: the world's renders score 1.0.
    text = run(
        capsys, "geneval", "--images", str(predictions), "--detector", "pdgen.world.detect:WorldDetector"
    )
    assert table(text)["overall"][0] == "1.000" and "sampling steps" in text


@pytest.mark.parametrize(
    "spec, message",
    [
        ("no_colon", "expected module:Class"),
        ("pdgen_missing_backend.detect:Mask2Former", "cannot import 'pdgen_missing_backend.detect'"),
        ("pdgen.world.detect:Nothing", "has no 'Nothing'"),
        ("pdgen.eval.geneval:ScoringOptions", "ScoringOptions lacks detect, classify_colors"),
        ("pdgen.world.config:DEFAULT_WORLD", "DEFAULT_WORLD is a WorldConfig, not a class"),
        (
            "pdgen.eval.geneval:Detection",
            r"Detection\(\) failed \(.*\); the back end is built with no arguments",
        ),
    ],
)
def test_geneval_detector_errors_name_what_is_missing(spec, message, predictions) -> None:
    with pytest.raises(SystemExit, match=f"pdgen eval geneval: --detector {spec}.*{message}"):
        main(["eval", "geneval", "--images", str(predictions), "--detector", spec])


def test_geneval_summarises_the_official_results_beside_the_costs(capsys, predictions, tmp_path) -> None:
    results = tmp_path / "results.jsonl"
    sample = str(predictions / "00000" / "samples" / "0000.png")
    verdicts = [
        ("single_object", True),
        ("single_object", True),
        ("single_object", False),
        ("counting", False),
    ]
    results.write_text(
        "".join(
            json.dumps({"filename": sample, "tag": tag, "correct": ok, "reason": ""}) + "\n"
            for tag, ok in verdicts
        )
    )
    rows = table(run(capsys, "geneval", "--results", str(results)))
    # GenEval's overall is the mean of the tag means: (2/3 + 0) / 2; the image mean is 2/4.
    assert rows["single_object"] == ["0.667", "3", "0.21-0.94"] and rows["counting"] == [
        "0.000",
        "1",
        "0.00-0.79",
    ]
    assert rows["overall"][0] == "0.333" and rows["image_mean"] == ["0.500", "4"]
    assert rows["sampling"] == ["steps", "100.00"]  # the folder found from the rows' file names


def test_geneval_refuses_a_bad_results_row_naming_its_line(tmp_path, predictions) -> None:
    results = tmp_path / "results.jsonl"
    results.write_text('{"tag": "counting", "correct": true}\n{"tag": "counting"}\n')
    with pytest.raises(SystemExit, match=r"results.jsonl:2: expected a GenEval result row"):
        main(["eval", "geneval", "--results", str(results)])
    with pytest.raises(SystemExit, match="exactly one of --detector"):
        main(["eval", "geneval", "--images", str(predictions)])


def test_wise_reports_both_overalls_and_the_failures(capsys, tmp_path) -> None:
    prompts = FIXTURES / "wise_legacy_sample.json"
    images = tmp_path / "images"
    images.mkdir()
    for record in json.loads(prompts.read_text()):
        Image.new("RGB", (8, 8), "gray").save(images / f"{record['prompt_id']}.png")
    out = tmp_path / "wise.json"
    inputs = ["--images", str(images), "--prompts", str(prompts), "--out", str(out)]
    script = [Reply(content="Consistency: 2\nRealism: 2\nAesthetic Quality: 2")] * 11 + [
        Reply(status=500)
    ] * 2
    with FakeOpenAI(script) as server:
        text = run(capsys, "wise", *inputs, "--base_url", server.base_url, "--retries", "1", "--backoff", "0")
    rows = table(text)
    assert rows["culture"] == ["1.000", "2", "0.400"] and rows["chemistry"] == ["1.000", "1", "0.100"]
    assert rows["weighted"] == ["1.000", "11"] and rows["unweighted"] == ["1.000", "11"]
    assert "judged 11 of 12 prompts; FAILED 1: prompt_id [902]" in text
    report = json.loads(out.read_text())
    assert report["judge"] == report["judge_reported"][0] == "gpt-4o-2024-05-13"
    assert report["rows"][-1]["attempts"][0].startswith("HTTP 500") and report["summary"]["failed"] == 1
    # --resume judges only the failed prompt again.
    with FakeOpenAI([Reply(content="Consistency: 0\nRealism: 0\nAesthetic Quality: 0")]) as server:
        text = run(
            capsys, "wise", *inputs, "--prompts", f"[{prompts}]", "--base_url", server.base_url, "--resume"
        )
        assert len(server.requests) == 1
    assert table(text)["chemistry"] == ["0.500", "2", "0.100"] and "judged 12 of 12 prompts" in text


def test_wise_prompts_feed_predict_and_predictions_feed_the_judge(capsys, tmp_path) -> None:
    prompts, jsonl = FIXTURES / "wise_legacy_sample.json", tmp_path / "wise.jsonl"
    assert run(capsys, "wise-prompts", "--prompts", str(prompts), "--out", str(jsonl)).startswith(str(jsonl))
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(records) == 12 and records[0] == {
        "prompt": "The dish eaten at a lantern festival in the made-up town of Vell",
        "prompt_id": 1,
        "category": "culture",
        "subcategory": "Festival",
    }  # no Explanation: it is the answer
    # A prediction folder of those records (as `pdgen predict` writes it) is what `eval wise` reads.
    for index, record in enumerate(records):
        write_prompt_folder(tmp_path / "out", index, record, [Image.new("RGB", (8, 8), "gray")])
    inputs = [
        "--images",
        str(tmp_path / "out"),
        "--prompts",
        str(prompts),
        "--out",
        str(tmp_path / "wise.json"),
    ]
    good = Reply(content="Consistency: 1\nRealism: 1\nAesthetic Quality: 1")
    with FakeOpenAI([good] * 12) as server:
        text = run(capsys, "wise", *inputs, "--base_url", server.base_url)
    assert table(text)["weighted"] == ["0.500", "12"] and "judged 12 of 12 prompts" in text
    # --resume refuses a report made by another judge.
    with pytest.raises(SystemExit, match="--resume: .* was judged by gpt-4o-2024-05-13"):
        main(["eval", "wise", *inputs, "--judge", "other-judge", "--resume"])


def test_the_wise_command_defaults_to_the_pinned_judge() -> None:
    assert inspect.signature(eval_commands.wise).parameters["judge"].default == DEFAULT_JUDGE
