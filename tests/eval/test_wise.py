"""WISE: prompt files, the judge's reply parser, judging against a fake endpoint, and the two overalls.

The fixture `tests/fixtures/wise_legacy_sample.json` holds 12 made-up prompts, two per category, with
legacy IDs and labels (WISE's own prompts have no licence and are not in the repository).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from pdgen.eval.wise import (
    LEGACY,
    VERIFIED,
    MalformedJudgement,
    WiseJudge,
    judge_images,
    load_prompts,
    parse_judgement,
    summarize,
    wiscore,
)
from pdgen.judges.openai import ChatClient
from pdgen.testing.damage import decompression_bomb_png
from pdgen.testing.fake_openai import FakeOpenAI, Reply

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "wise_legacy_sample.json"

# (consistency, realism, aesthetic) per prompt in ID order, and the category scores they give by hand:
# culture (1.0 + 0.9) / 2 = 0.95, time (0.5 + 0) / 2 = 0.25, space (0.95 + 1) / 2 = 0.975,
# biology (0.3 + 0.55) / 2 = 0.425, physics (0.7 + 1) / 2 = 0.85, chemistry (0.45 + 0.1) / 2 = 0.275.
SCORES = [(2, 2, 2), (2, 1, 2), (1, 1, 1), (0, 0, 0), (2, 2, 1), (2, 2, 2),
          (0, 2, 2), (1, 2, 0), (2, 0, 0), (2, 2, 2), (1, 0, 2), (0, 1, 0)]  # fmt: skip
WEIGHTED = 0.4 * 0.95 + 0.167 * 0.25 + 0.133 * 0.975 + 0.1 * (0.425 + 0.85 + 0.275)  # 0.706425
UNWEIGHTED = (0.95 + 0.25 + 0.975 + 0.425 + 0.85 + 0.275) / 6  # 0.620833


def answer(scores: tuple[int, int, int]) -> Reply:
    c, r, a = scores
    return Reply(content=f"Consistency: {c}\nRealism: {r}\nAesthetic Quality: {a}")


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """One small image per fixture prompt, in WISE's layout `<prompt_id>.png`."""
    folder = tmp_path / "images"
    folder.mkdir()
    for prompt in load_prompts(FIXTURE).prompts:
        Image.new("RGB", (8, 8), (prompt.prompt_id % 256, 0, 0)).save(folder / f"{prompt.prompt_id}.png")
    return folder


def judge_for(server: FakeOpenAI, retries: int = 3, timeout: float = 5.0) -> WiseJudge:
    client = ChatClient(
        server.base_url, model="gpt-4o-2024-05-13", timeout=timeout, max_retries=retries, backoff=0
    )
    return WiseJudge(client)


# ---- prompt files -------------------------------------------------------------------------------------


def test_fixture_loads_as_the_legacy_release() -> None:
    prompt_set = load_prompts(FIXTURE)
    assert prompt_set.schema is LEGACY and len(prompt_set.prompts) == 12
    assert [p.category for p in prompt_set.prompts[::2]] == list(
        ("culture", "time", "space", "biology", "physics", "chemistry")
    )
    assert len(prompt_set.sha256) == 64


def test_verified_release_is_recognised_by_its_id_ranges_and_labels(tmp_path: Path) -> None:
    records = [
        {"prompt_id": 401, "Prompt": "p", "Explanation": "e", "Category": "Time", "Subcategory": "s"},
        {"prompt_id": 530, "Prompt": "p", "Explanation": "e", "Category": "Space", "Subcategory": "s"},
        {"prompt_id": 770, "Prompt": "p", "Explanation": "e", "Category": "Physics", "Subcategory": "s"},
    ]
    path = tmp_path / "verified.json"
    path.write_text(json.dumps(records))
    prompt_set = load_prompts(path)
    assert prompt_set.schema is VERIFIED
    assert [p.category for p in prompt_set.prompts] == ["time", "space", "physics"]
    # Read as legacy, the labels are wrong: legacy writes 'time' (and puts ID 530 in time, not space).
    with pytest.raises(ValueError, match=r"verified.json: record 0 \(prompt_id 401\): Category 'Time'"):
        load_prompts(path, schema="legacy")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"Prompt": None}, r"record 3: missing key 'Prompt'"),
        ({"prompt_id": "402"}, r"record 3: prompt_id must be a int, found '402'"),
        ({"prompt_id": 401}, r"record 3 \(prompt_id 401\): prompt_id repeats .*record 2"),
        ({"prompt_id": 1001}, r"record 3 \(prompt_id 1001\): prompt_id must be in 1..1000"),
        ({"Category": "Space"}, r"record 3 \(prompt_id 402\): Category 'Space' does not match"),
    ],
)
def test_a_bad_record_is_named_by_file_and_position(tmp_path: Path, change: dict, message: str) -> None:
    records = json.loads(FIXTURE.read_text())
    records[3].update(change)
    records[3] = {key: value for key, value in records[3].items() if value is not None}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(records))
    with pytest.raises(ValueError, match=f"bad.json: {message}"):
        load_prompts(path)


def test_a_file_that_is_not_an_array_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "object.json"
    path.write_text('{"Prompt": "x"}')
    with pytest.raises(ValueError, match="object.json: expected a JSON array"):
        load_prompts(path)


# ---- parsing and scoring ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [
        "Consistency: 2\nRealism: 1\nAesthetic Quality: 0",
        "**Consistency:** 2\n**Realism**: 1\naesthetic quality\uff1a 0",
        "Here you go.\nConsistency : 2 \nRealism: 1\nAesthetic  Quality: 0\n",
        "2\n1\n0",
    ],
)
def test_judge_replies_parse_in_their_usual_shapes(reply: str) -> None:
    assert parse_judgement(reply) == {"consistency": 2, "realism": 1, "aesthetic_quality": 0}


@pytest.mark.parametrize(
    "reply", ["Looks great!", "Consistency: 2\nRealism: 3\nAesthetic Quality: 1", "2\n1"]
)
def test_a_reply_without_three_scores_is_malformed(reply: str) -> None:
    with pytest.raises(MalformedJudgement, match="no score for"):
        parse_judgement(reply)


def test_wiscore_weights_consistency_realism_and_aesthetics() -> None:
    assert wiscore(2, 1, 2) == pytest.approx(0.9)
    assert wiscore(2, 2, 2) == pytest.approx(1.0) and wiscore(0, 0, 0) == 0.0


def test_twelve_prompts_give_both_overalls(images: Path) -> None:
    prompt_set = load_prompts(FIXTURE)
    with FakeOpenAI([answer(scores) for scores in SCORES]) as server:
        rows = judge_images(prompt_set, images, judge_for(server))
        requests = server.requests
    summary = summarize(rows, prompt_set.schema)
    assert summary["categories"]["culture"] == {"score": pytest.approx(0.95), "images": 2}
    assert summary["categories"]["chemistry"]["score"] == pytest.approx(0.275)
    assert summary["overall_weighted"] == pytest.approx(WEIGHTED)
    assert summary["overall_unweighted"] == pytest.approx(UNWEIGHTED)
    assert summary["judged"] == 12 and summary["failed"] == 0 and not summary["complete"]
    # The request: pinned judge id, temperature 0, the explanation in the rubric, the image as a data URL.
    first = requests[0]
    assert first["model"] == "gpt-4o-2024-05-13" and first["temperature"] == 0.0
    text, image = first["messages"][1]["content"]
    assert "Vell's festival dish is a round blue dumpling." in text["text"]
    assert image["image_url"]["url"].startswith("data:image/png;base64,")
    assert rows[0]["judge_model"] == "gpt-4o-2024-05-13" and rows[0]["attempts"] == []


def test_timeouts_500s_and_malformed_replies_are_retried_and_recorded(images: Path) -> None:
    prompt_set = load_prompts(FIXTURE)
    script = [
        Reply(delay=2.0, content="late"),  # prompt 1: a timeout, then an answer
        answer(SCORES[0]),
        Reply(status=500),  # prompt 2: an HTTP 500, then an answer
        answer(SCORES[1]),
        Reply(content="A lovely picture, 9/10."),  # prompt 401: a reply without scores, then an answer
        answer(SCORES[2]),
        Reply(text="<html>bad gateway</html>"),  # prompt 402: a body that is not a completion
        answer(SCORES[3]),
        *[answer(scores) for scores in SCORES[4:]],
    ]
    with FakeOpenAI(script) as server:
        rows = judge_images(prompt_set, images, judge_for(server, timeout=0.5))
    assert [len(row["attempts"]) for row in rows] == [1, 1, 1, 1] + [0] * 8
    assert rows[0]["attempts"][0].startswith("timeout")
    assert rows[1]["attempts"][0].startswith("HTTP 500")
    assert rows[2]["attempts"][0].startswith("malformed: no score for consistency")
    assert rows[3]["attempts"][0].startswith("malformed: not a chat completion")
    assert summarize(rows, prompt_set.schema)["overall_weighted"] == pytest.approx(WEIGHTED)


def test_a_prompt_that_fails_after_the_retries_is_counted_not_dropped(images: Path) -> None:
    prompt_set = load_prompts(FIXTURE)
    (images / "902.png").unlink()  # and one image is missing
    script = [Reply(content="no idea"), Reply(status=500)] + [answer(scores) for scores in SCORES[1:11]]
    with FakeOpenAI(script) as server:
        rows = judge_images(prompt_set, images, judge_for(server, retries=1))
        assert server.remaining == 0
    assert rows[0]["error"].startswith("judge gave no usable reply") and len(rows[0]["attempts"]) == 2
    assert rows[-1]["error"] == "no image"
    summary = summarize(rows, prompt_set.schema)
    assert summary["judged"] == 10 and summary["failed"] == 2 and summary["failed_ids"] == [1, 902]
    # The failed prompts are out of their categories' means, and say so through the counts.
    assert summary["categories"]["culture"] == {"score": pytest.approx(0.9), "images": 1}
    assert summary["categories"]["chemistry"] == {"score": pytest.approx(0.45), "images": 1}


def test_a_reply_cut_short_or_an_unreadable_image_is_a_failed_row_not_an_exception(images: Path) -> None:
    prompt_set = load_prompts(FIXTURE)
    (images / "1.png").write_bytes(decompression_bomb_png())
    cut = b"HTTP/1.1 200 OK\r\nContent-Length: 400\r\n\r\n{"  # http.client raises IncompleteRead
    script = [Reply(raw=cut)] * 2 + [answer(scores) for scores in SCORES[2:]]
    with FakeOpenAI(script) as server:
        rows = judge_images(prompt_set, images, judge_for(server, retries=1))
    assert rows[0]["error"].startswith("unreadable image: ") and "decompression bomb" in rows[0]["error"]
    assert "IncompleteRead" in rows[1]["error"] and len(rows[1]["attempts"]) == 2
    assert summarize(rows, prompt_set.schema)["failed_ids"] == [1, 2]


def test_resume_judges_only_what_failed(images: Path) -> None:
    prompt_set = load_prompts(FIXTURE)
    with FakeOpenAI([answer(scores) for scores in SCORES]) as server:
        first = judge_images(prompt_set, images, judge_for(server))
    first[5] = {**first[5], "error": "judge gave no usable reply"}
    with FakeOpenAI([answer(SCORES[5])]) as server:
        again = judge_images(prompt_set, images, judge_for(server), previous=first)
        assert len(server.requests) == 1
    assert summarize(again, prompt_set.schema)["overall_unweighted"] == pytest.approx(UNWEIGHTED)


def test_nothing_judged_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"no WISE prompt was judged \(1 failed\)"):
        summarize([{"prompt_id": 1, "category": "culture", "error": "no image"}], LEGACY)
