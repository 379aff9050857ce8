"""The edit subset: world edits drawn and carried out exactly, as trajectories that open with the input image,
built into shards like every subset, and trained on by the mixture."""

import numpy as np
import pytest

from pdgen.cli import main
from pdgen.data.edit import (
    EDIT_TYPES,
    EditDataModule,
    EditOp,
    EditSpec,
    build_edit,
    draw_edit,
    edit_sample,
    request_split,
)
from pdgen.data.packing import PackedBatch
from pdgen.data.packing_config import PackingGeometry
from pdgen.data.reading import ReaderConfig
from pdgen.data.shards import ShardSource, read_manifest, split_shards
from pdgen.scene.describe import PLACES, read_scene
from pdgen.trajectory import Plan, Sketch
from pdgen.world.config import DEFAULT_WORLD

SPEC = EditSpec(num_samples=12, val_size=3, samples_per_shard=5)


def draw(kind, seed=0):
    return draw_edit(np.random.default_rng(seed), DEFAULT_WORLD, kind)


@pytest.mark.parametrize("kind", EDIT_TYPES)
def test_each_edit_type_opens_with_the_input_image_and_plans_one_step_per_change(kind):
    edit = draw(kind)
    trajectory = edit.trajectory()
    steps = 2 if kind == "combo" else 1
    assert [type(s) for s in trajectory.steps] == [Plan, Sketch] * steps
    assert trajectory.input_image is not None and trajectory.images[0] is trajectory.input_image
    assert trajectory.prompt == edit.request and request_split(edit.request) == "train"
    for step, op in zip(edit.steps, edit.ops, strict=True):
        assert step.goal.op == op.op and PLACES in step.goal.des  # the world's plan language, places named
        assert read_scene(step.goal.des).same_as(step.goal.graph)  # the description reads back to the scene


def test_the_request_names_the_change_and_the_plan_names_where():
    add = draw("add", seed=3)
    ((predicate, reference),) = [op.relation for op in add.ops]
    assert add.request.startswith(("Add a ", "Add an "))
    assert f"the {reference[1]} {reference[0]}" in add.request
    assert add.steps[0].goal.ins.startswith(add.request[:-1] + ", at the ")  # the cell the plan chose
    combo = draw("combo", seed=1)
    assert ", then " in combo.request and len(combo.ops) == 2


def test_a_combo_never_touches_what_its_first_change_made_or_related_to():
    for seed in range(30):
        first, second = draw("combo", seed).ops
        spoken_for = {first.result, first.relation and first.relation[1], first.target and first.target.key}
        assert second.target is None or second.target.key not in spoken_for


def test_edits_change_only_what_they_ask_for():
    for seed in range(20):
        for kind in ("recolor", "replace", "remove"):
            edit = draw(kind, seed)
            (op,) = edit.ops
            before = {p.cell: p.key for p in edit.source.instances if p.cell != op.target.cell}
            after = {p.cell: p.key for p in edit.steps[-1].state.instances if p.cell != op.target.cell}
            assert before == after


def test_ops_round_trip_through_json():
    for edit in (draw(kind) for kind in EDIT_TYPES):
        assert [EditOp.from_dict(op.to_dict()) for op in edit.ops] == list(edit.ops)


def test_samples_are_a_function_of_seed_and_index_and_train_requests_only():
    assert edit_sample(SPEC, 4).trajectory() == edit_sample(SPEC, 4).trajectory()
    requests = {edit_sample(SPEC, i).request for i in range(40)}
    assert len(requests) > 30 and {request_split(r) for r in requests} == {"train"}
    with pytest.raises(ValueError, match="unknown edit type 'rotate'"):
        draw("rotate")


def test_the_build_writes_shards_tokenizer_and_a_manifest_with_the_edit_types(tmp_path):
    manifest = build_edit(tmp_path, SPEC)
    assert read_manifest(tmp_path) == {"format": "pdgen.shards/1", **manifest}
    assert [s["samples"] for s in manifest["splits"]["train"]["shards"]] == [5, 5, 2]
    assert sum(manifest["edit_types"].values()) == 12 and set(manifest["edit_types"]) == set(EDIT_TYPES)
    assert manifest["stats"]["total_samples"] == 12 and manifest["redraws"]
    source = ShardSource(split_shards(tmp_path, manifest, "train"), shuffle=False)
    read = [t for _, t in source.trajectories(0)]
    assert read == [
        edit_sample(SPEC, i).trajectory() for i in range(12)
    ]  # the input image survives the shard


def test_the_data_module_packs_the_input_image_and_trains_a_step(tmp_path):
    import lightning as L

    from pdgen.lit import ProcessDrivenModule, ScheduleConfig

    module = ProcessDrivenModule(trunk="embedded", schedule=ScheduleConfig(warmup_steps=1))
    reader = ReaderConfig(max_tokens=1024, num_workers=0, packing="embedded")
    geometry = PackingGeometry.of_trunk(module.trunk.config)  # what `pdgen fit` links from model.trunk
    build = EditSpec(num_samples=6, val_size=2, samples_per_shard=3)
    dm = EditDataModule(tmp_path, build, reader=reader, geometry=geometry)
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert isinstance(batch, PackedBatch)
    quiet = dict(enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer = L.Trainer(accelerator="cpu", max_steps=1, logger=False, limit_val_batches=0, **quiet)
    trainer.fit(module, datamodule=dm)
    assert trainer.global_step == 1 and np.isfinite(trainer.callback_metrics["train/loss"].item())


def test_the_command_builds_the_subset(tmp_path, capsys):
    main(["data", "build", "edit", "--out", str(tmp_path / "edit"), "--n", "4", "--val_size", "1"])
    assert "edit subset: 2 shards" in capsys.readouterr().out
    assert read_manifest(tmp_path / "edit")["subset"] == "edit"
