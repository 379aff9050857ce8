"""`pdgen data parse` and `pdgen data plan`, run in-process."""

import json

import pytest

from pdgen.cli import main


def test_data_parse_prints_geneval_constraints(capsys, tmp_path):
    main(["data", "parse", "a photo of two benchs"])
    record = json.loads(capsys.readouterr().out)
    assert record["include"] == [{"class": "bench", "count": 2}]
    assert record["exclude"] == [{"class": "bench", "count": 3}]
    assert record["graph"]["objects"] == [{"name": "bench", "count": 2, "color": None}]
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\na dog right of a cat\n")
    main(["data", "parse", "--file", str(prompts)])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [sorted(r) for r in lines] == [["graph", "include", "prompt"]] * 2


def test_data_parse_fails_naming_the_words():
    with pytest.raises(SystemExit, match="could not understand 'flying'"):
        main(["data", "parse", "a flying dog"])


def test_data_plan_renders_each_step(capsys, tmp_path):
    main(["data", "plan", "a blue square left of two red circles", "--seed", "1", "--render", str(tmp_path)])
    lines = capsys.readouterr().out.splitlines()
    background = "<ins>Start with an empty grey background.</ins><des>An empty grey background.</des>"
    assert lines[0] == f"0. [background] {background}"
    assert len(lines) == 4 and all("<ins>" in line and "</des>" in line for line in lines)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"step_0{i}.png" for i in range(4)] + ["strip.png"]


def test_data_plan_augment_is_a_flag(capsys):
    prompt = "a red circle left of a blue square"
    main(["data", "plan", prompt, "--seed", "3"])
    plain = capsys.readouterr().out
    main(["data", "plan", prompt, "--seed", "3", "--augment"])
    augmented = capsys.readouterr().out
    main(["data", "plan", prompt, "--seed", "3", "--no_augment"])
    assert capsys.readouterr().out == plain
    assert "[recolor]" in augmented and "[recolor]" not in plain
