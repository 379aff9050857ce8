"""`pdgen eval shapes`, run in-process."""

import json

from pdgen.cli import main


def test_eval_shapes_on_ground_truth(capsys, tmp_path):
    images = tmp_path / "images"
    out = tmp_path / "results.jsonl"
    main(
        [
            "eval",
            "shapes",
            "--images",
            str(images),
            "--truth",
            "--per_tag",
            "2",
            "--samples",
            "1",
            "--out",
            str(out),
        ]
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["overall"] == 1.0 and len(summary) == 8
    assert len(out.read_text().splitlines()) == len(list(images.iterdir()))
