import json

import pytest
from PIL import Image

from pdgen.eval.samples import read_prompt_folders, write_jsonl, write_prompt_folder


def test_round_trip_of_the_official_layout(tmp_path):
    meta = {"tag": "single_object", "include": [{"class": "cat", "count": 1}], "prompt": "a photo of a cat"}
    images = [Image.new("RGB", (8, 8), (i * 40, 0, 0)) for i in range(2)]
    folder = write_prompt_folder(tmp_path, 3, meta, images)
    assert folder.name == "00003"
    assert json.loads((folder / "metadata.jsonl").read_text()) == meta
    assert "\n" not in (folder / "metadata.jsonl").read_text()
    (folder / "samples" / "trajectory.json").write_text("{}")  # not a sample: ignored
    (tmp_path / "notes").mkdir()  # not all digits: ignored
    (found,) = read_prompt_folders(tmp_path)
    assert found.metadata == meta and [p.name for p in found.images] == ["0000.png", "0001.png"]
    write_jsonl(tmp_path / "results.jsonl", [{"a": 1}, {"b": 2}])
    assert (tmp_path / "results.jsonl").read_text() == '{"a": 1}\n{"b": 2}\n'


def test_errors_name_the_file(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        read_prompt_folders(tmp_path / "missing")
    (tmp_path / "00000").mkdir()
    (tmp_path / "00000" / "metadata.jsonl").write_text('{"tag": "x"}\n{"tag": "y"}')
    with pytest.raises(ValueError, match="00000/metadata.jsonl"):
        read_prompt_folders(tmp_path)
