"""The real-image multi-turn build end to end on test back ends: the LLM parser and judge on the scripted
OpenAI-compatible server, Flux-Kontext on a tiny local pipeline; failures skipped and counted; a build split
across processes makes the shards one process makes, and resumes."""

import json

import pytest

pytest.importorskip(
    "diffusers",
    reason="the real-image build's editor needs the diffusers extra: pip install 'pdgen[diffusers]'",
)

from pdgen.cli import main  # noqa: E402
from pdgen.data.realimage import Backends, RealImageSpec, build_real, merge_real_build  # noqa: E402
from pdgen.data.shards import ShardSource, read_manifest, split_sample_counts, split_shards  # noqa: E402
from pdgen.editors.flux_kontext import FluxKontextEditor  # noqa: E402
from pdgen.judges.openai import ChatClient, OpenAIJudge  # noqa: E402
from pdgen.scene.llm_parser import OpenAIParser  # noqa: E402
from pdgen.scene.parser import TemplateParser  # noqa: E402
from pdgen.testing.fake_openai import FakeOpenAI, Reply  # noqa: E402
from pdgen.testing.tiny_flux import TINY_SIZE, save_tiny_flux_kontext  # noqa: E402
from pdgen.trajectory import Plan, Sketch  # noqa: E402

PROMPTS = ("a photo of a red cup", "a photo of a dog", "a photo of a cat")


def graph(name, color=None):
    return Reply(
        content=json.dumps({"objects": [{"name": name, "count": 1, "color": color}], "relations": []})
    )


OK = Reply(content=json.dumps({"ok": True, "analysis": "As asked.", "refine": None}))
NO = Reply(content=json.dumps({"ok": False, "analysis": "There is no cat.", "refine": "Add a cat."}))
REFUSED = Reply(content=json.dumps({"objects": [], "relations": []}))


@pytest.fixture(scope="module")
def editor(tmp_path_factory):
    path = save_tiny_flux_kontext(tmp_path_factory.mktemp("flux") / "tiny-kontext")
    return FluxKontextEditor(path, device="cpu", dtype="float32", num_inference_steps=2, size=TINY_SIZE,
                             max_sequence_length=32, auto_resize=False)  # fmt: skip


def test_the_paper_pipeline_writes_valid_shards_and_counts_what_it_skips(editor, tmp_path):
    # Requests come in order: each sample of a batch is parsed and its plan judged, then the batch's steps are
    # drawn together, each image judged. The dog's parse is refused twice; the cat's second image is rejected.
    # Both first steps edit the blank canvas by the same instruction, so the second is the same image, and
    # its verdict comes from the judge's cache.
    script = [graph("cup", "red"), OK, REFUSED, REFUSED, graph("cat"), OK, OK, OK, NO]
    with FakeOpenAI(script) as server:

        def client(name):
            return ChatClient(
                server.base_url, "gpt-test", None, max_retries=1, backoff=0.0, cache_dir=tmp_path / name
            )

        backends = Backends(OpenAIParser(client("parser")), editor, OpenAIJudge(client("judge")))
        spec = RealImageSpec(PROMPTS, num_samples=3, samples_per_shard=3, batch_size=3)
        manifest = build_real(tmp_path / "real", spec, backends)
        assert server.remaining == 0
    assert manifest["failures"] == {
        "parser": 1,
        "planner": 0,
        "editor": 0,
        "judge_error": 0,
        "judge_disagrees": 1,
    }
    assert manifest["attempted"] == 3 and manifest["stats"]["total_samples"] == 1
    assert read_manifest(tmp_path / "real") == {"format": "pdgen.shards/1", **manifest}
    source = ShardSource(split_shards(tmp_path / "real", manifest, "train"), shuffle=False)
    ((key, trajectory),) = list(source.trajectories(0))
    assert key.endswith("train000000000") and trajectory.prompt == PROMPTS[0]
    assert [type(s) for s in trajectory.steps] == [Plan, Sketch, Plan, Sketch]
    assert trajectory.steps[2].ins == "Add a red cup." and trajectory.answer.size == (TINY_SIZE, TINY_SIZE)


def test_two_processes_make_the_shards_of_one_and_a_rerun_resumes(editor, tmp_path):
    spec = RealImageSpec(PROMPTS + ("a photo of two dogs",), num_samples=5, val_size=2, samples_per_shard=2)
    backends = Backends(TemplateParser(), editor)
    whole = build_real(tmp_path / "one", spec, backends)
    assert (
        build_real(tmp_path / "two", spec, backends, num_shards=2, shard_index=1) is None
    )  # not all done yet
    split = build_real(tmp_path / "two", spec, backends, num_shards=2, shard_index=0)  # the last one merges
    assert split == whole and [s["name"] for s in whole["splits"]["train"]["shards"]] == [
        "train-000000.tar", "train-000001.tar", "train-000002.tar"
    ]  # fmt: skip
    assert split_sample_counts(tmp_path / "one", whole, "val") == [2]
    for shard in (tmp_path / "one").glob("*.tar"):
        assert shard.read_bytes() == (tmp_path / "two" / shard.name).read_bytes()
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "two").glob("*.tar")}
    assert (
        build_real(tmp_path / "two", spec, backends, num_shards=2, shard_index=0) == whole
    )  # nothing redone
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "two").glob("*.tar")} == before
    assert merge_real_build(tmp_path / "two", spec) == whole
    with pytest.raises(ValueError, match="holds a build of another spec"):
        build_real(tmp_path / "two", RealImageSpec(PROMPTS, num_samples=1), backends)


@pytest.mark.slow
def test_the_command_builds_with_the_chosen_back_ends(editor, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    main(["data", "build", "multiturn", "--editor", "flux-kontext", "--flux_path", str(editor.path),
          "--device", "cpu", "--dtype", "float32", "--steps", "2", "--size", str(TINY_SIZE),
          "--judge", "none", "--prompts", str(prompts), "--n", "2", "--val_size", "0",
          "--out", str(tmp_path / "real")])  # fmt: skip
    out = capsys.readouterr().out
    assert "multiturn-real subset" in out and "2 attempted, skipped: none" in out
    manifest = read_manifest(tmp_path / "real")
    assert manifest["spec"]["backends"]["parser"] == "template" and manifest["spec"]["prompts"]["count"] == 3
    with pytest.raises(SystemExit, match="--prompts FILE is required"):
        main(["data", "build", "multiturn", "--editor", "flux-kontext", "--flux_path", str(editor.path)])
