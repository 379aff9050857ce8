"""tools/bench_generate.py: the dictated runs it times follow their script; it reports both modes."""

import json

import pytest
import torch
from toolkit import imported_tool

from pdgen.trajectory import Inspect, Plan, Sketch


@pytest.fixture(scope="module")
def bench_generate():
    yield from imported_tool("bench_generate")


@pytest.fixture(autouse=True)
def _one_thread():
    """Many tiny forward passes: one thread is far faster on a shared machine (and the bench's default)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_a_random_model_writes_the_dictated_plans_token_by_token(bench_generate):
    cases = bench_generate.world_cases(1, images=2, inspect=True)
    trunk, head, tokenizer, packing = bench_generate.build_model("embedded", cases)
    config = bench_generate.GenerationConfig.from_name(
        "tiny", num_timesteps=2, image_size=(32, 32), max_images=3, inspect=True
    )
    bench = bench_generate.Bench(trunk, head, tokenizer, packing, config)
    case = cases[0]
    result, cpu_s = bench.process(case)

    assert [type(s) for s in result.trajectory.steps] == [Plan, Sketch, Inspect, Plan, Sketch]
    assert result.stop_reason == "stop_token" and cpu_s > 0
    # The model wrote every dictated token, <|im_end|> included, some of them as drafts it kept.
    written = sum(len(tokenizer.encode(text)) + 1 for text in case.texts)
    assert result.costs.text_tokens == written and head.queue == []
    assert config.draft_tokens and 0 < result.costs.drafted_tokens_kept < written


def test_dictation_without_drafts_is_one_pass_a_token(bench_generate):
    cases = bench_generate.world_cases(1, images=1, inspect=False)
    trunk, head, tokenizer, packing = bench_generate.build_model("embedded", cases)
    config = bench_generate.GenerationConfig.from_name(
        "tiny", num_timesteps=2, image_size=(32, 32), max_images=2, cfg_text_scale=1.0, draft_tokens=0
    )
    result, _ = bench_generate.Bench(trunk, head, tokenizer, packing, config).process(cases[0])
    written = len(tokenizer.encode(cases[0].texts[0])) + 1
    # the prompt, <|im_start|> and each token but <|im_end|>, <|im_end|>, 1 image query, its clean copy
    assert result.costs.text_tokens == written and result.costs.forward_passes == 1 + written + 1 + 1 + 1


def test_the_report_compares_the_process_with_single_passes(bench_generate, tmp_path):
    report = bench_generate.main(
        ["--prompts", "1", "--repeats", "1", "--images", "2", "--timesteps", "2", "--breakdown"]
        + ["--json", str(tmp_path / "g.json"), "--markdown", str(tmp_path / "g.md")]
    )
    result = report["results"]["pdgen"]
    assert result["images"] == 2 and result["sampling_steps"] == 4 and result["pairs"] == 1
    assert result["ratio_median"] > 0 and result["text_tokens"] > 10
    assert json.loads((tmp_path / "g.json").read_text())["results"] == report["results"]
    assert "| pdgen | **" in (tmp_path / "g.md").read_text()
    process, single = report["breakdown"]["process"], report["breakdown"]["single-pass x images"]
    assert process["text tokens"] > 0 and single["text tokens"] == 0  # single-pass writes no text
    assert process["image queries"] > 0 and single["image queries"] > 0


def test_passes_times_one_token_and_an_image_query_over_a_context(bench_generate, tmp_path):
    report = bench_generate.main(["--prompts", "1", "--passes", "12", "--json", str(tmp_path / "p.json")])
    assert set(report["passes"]) == {"one-token pass", "token + 8 drafts", "image query"}
    for times in report["passes"].values():
        assert 0 < times["best_ms"] <= times["median_ms"]
    assert json.loads((tmp_path / "p.json").read_text())["passes"] == report["passes"]
