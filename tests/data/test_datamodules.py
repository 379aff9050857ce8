"""The subsets' DataModules and the mixture: the conflict set's checkpoint or symbolic set, the mixture's
draws by weight before packing, its exact resumption, one validation loader per subset, its reader."""

import itertools
import logging
import shutil
import time

import lightning as L
import pytest
import torch
from reading_kit import SMALL, module, options, take, trainer

from pdgen.data.alignment import AlignmentSpec
from pdgen.data.conflict import ConflictSpec
from pdgen.data.datamodules import (
    AlignmentDataModule,
    ConflictDataModule,
    MixtureDataModule,
    MultiTurnDataModule,
)
from pdgen.data.packing import PackedBatch
from pdgen.data.packing_config import PackingGeometry
from pdgen.data.reading import ReaderConfig
from pdgen.data.shards import ReaderPart
from pdgen.trajectory import Inspect


@pytest.mark.parametrize("kind", ["subset", "mixture"])
def test_data_too_long_for_any_pack_is_an_error_not_a_hang(built, conflict_root, kind):
    dm = module(built, max_tokens=64) if kind == "subset" else mixture(built, conflict_root, max_tokens=64)
    started = time.monotonic()
    with pytest.raises(ValueError, match="no pack can be filled: .* longer than max_tokens=64"):
        next(iter(dm.train_dataloader()))
    assert time.monotonic() - started < 30


# ---- the reasoning subsets and the mixture -------------------------------------------------------------

CONFLICT = ConflictSpec(num_samples=24, val_size=4, samples_per_shard=8)


@pytest.fixture(scope="module")
def conflict_root(tmp_path_factory):
    """A small symbolic conflict set (``root/symbolic``)."""
    root = tmp_path_factory.mktemp("conflict")
    ConflictDataModule(root, CONFLICT).prepare_data()
    return root


def mixture(built, conflict_root, **overrides) -> MixtureDataModule:
    subsets = {
        "multiturn": MultiTurnDataModule(built, SMALL),
        "conflict": ConflictDataModule(conflict_root, CONFLICT, from_ckpt="symbolic"),
    }
    read = ReaderConfig(max_tokens=1024, num_workers=0)
    dm = MixtureDataModule(
        subsets, **options(read, **{"weights": {"multiturn": 1.0, "conflict": 3.0}, **overrides})
    )
    dm.prepare_data()
    dm.setup("fit")
    return dm


def inspected(trajectory) -> bool:
    """Conflict samples inspect a step; multi-turn ones never do."""
    return any(isinstance(step, Inspect) for step in trajectory.steps)


def test_a_missing_checkpoint_is_an_error_naming_it(conflict_root):
    missing = str(conflict_root / "no-stage1.ckpt")
    with pytest.raises(ValueError, match=f"from_ckpt='{missing}': no such checkpoint file"):
        ConflictDataModule(conflict_root, CONFLICT, from_ckpt=missing)


def test_the_symbolic_set_asked_for_by_name(conflict_root, caplog):
    with caplog.at_level(logging.INFO, logger="pdgen.data.datamodules"):
        dm = ConflictDataModule(conflict_root, CONFLICT, from_ckpt="symbolic")
    assert dm.root == conflict_root / "symbolic" and dm.conflict_source.from_ckpt is None
    assert "using the symbolic conflict set" in caplog.text


def test_without_the_checkpoint_yet_the_conflict_set_is_symbolic_and_says_so(conflict_root, caplog):
    with caplog.at_level(logging.INFO, logger="pdgen.data.datamodules"):
        dm = ConflictDataModule(
            conflict_root,
            CONFLICT,
            from_ckpt=str(conflict_root / "no-stage1.ckpt"),
            missing_ckpt="symbolic",
        )
    assert dm.root == conflict_root / "symbolic" and dm.conflict_source.from_ckpt is None
    assert "is not there yet" in caplog.text and "using the symbolic conflict set" in caplog.text
    assert len(caplog.records) == 1  # one line says which set and why
    dm.prepare_data()  # the existing symbolic shards are the ones asked for
    dm.setup("fit")
    assert dm.manifest["mode"] == "symbolic" and dm.manifest["stats"]["negative_samples"] > 0
    assert isinstance(next(iter(dm.train_dataloader())), PackedBatch)


def test_the_mixture_draws_subsets_by_weight_before_packing(built, conflict_root):
    dm = mixture(built, conflict_root)
    stream = dm.stream("train")(0, ReaderPart())
    drawn = [inspected(trajectory) for _, trajectory in itertools.islice(stream, 400)]
    assert 0.68 < sum(drawn) / len(drawn) < 0.82  # weight 3 of 4 (24 conflict samples, each read ~12 times)
    pack = next(iter(dm.train_dataloader()))
    assert isinstance(pack, PackedBatch) and len(pack.sample_lens) > 1


def test_the_mixture_resumes_at_the_next_pack(built, conflict_root):
    uninterrupted = take(mixture(built, conflict_root).train_dataloader(), 6)
    resumed = mixture(built, conflict_root)
    resumed.load_state_dict({**resumed.state_dict(), "packs_consumed": 2})
    assert take(resumed.train_dataloader(), 4) == uninterrupted[2:]


def test_a_subset_of_weight_zero_is_validated_but_not_trained_on(built, conflict_root):
    dm = mixture(built, conflict_root, weights={"multiturn": 1.0, "conflict": 0.0})
    trained = [t for _, t in itertools.islice(dm.stream("train")(0, ReaderPart()), 60)]
    assert not any(inspected(t) for t in trained)
    validated = [t for _, t in dm.stream("val")(0, ReaderPart())]
    assert len(validated) == SMALL.val_size + CONFLICT.val_size
    # The subsets take turns, so a validation capped at a few packs still sees every subset.
    assert [inspected(t) for t in validated[:4]] == [False, True, False, True]
    # One validation loader per subset, so the module logs each subset's losses apart.
    loaders = dict(zip(dm.val_names, dm.val_dataloader(), strict=True))
    assert list(loaders) == ["multiturn", "conflict"]
    assert sum(len(b.sample_lens) for b in loaders["multiturn"]) == SMALL.val_size
    assert sum(len(b.sample_lens) for b in loaders["conflict"]) == CONFLICT.val_size


def test_validating_on_the_mixture_logs_each_subset_apart(built, conflict_root):
    from pdgen.lit import ProcessDrivenModule

    torch.manual_seed(0)
    embedded = ProcessDrivenModule("embedded")
    dm = mixture(
        built, conflict_root, weights={"multiturn": 1.0, "conflict": 0.0},
        geometry=PackingGeometry.of_trunk(embedded.trunk.config),
    )  # fmt: skip
    validator = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, limit_val_batches=1)
    multiturn, conflict = validator.validate(embedded, datamodule=dm)
    assert {"val/multiturn/generate_loss", "val/multiturn/inspect_loss"} <= set(multiturn)
    # The inspector's loss on held-out conflict samples: what Table 7's ablations compare.
    assert "val/conflict/inspect_loss" in conflict and "val/multiturn/loss" not in conflict


def test_the_mixture_counts_corrupt_samples_of_every_subset(built, conflict_root, tmp_path):
    root = tmp_path / "conflict"
    shutil.copytree(conflict_root, root)
    shard = root / "symbolic" / "train-000001.tar"
    shard.write_bytes(shard.read_bytes()[:3000])  # the shard breaks off in its first sample
    dm = mixture(built, tmp_path / "conflict")
    take(dm.train_dataloader(), 3)
    assert dm.skipped_samples["truncated"] >= 1


def test_the_mixture_refuses_weights_that_do_not_name_its_subsets(built, conflict_root):
    with pytest.raises(ValueError, match="weights names"):
        mixture(built, conflict_root, weights={"multiturn": 1.0, "alignment": 1.0})
    with pytest.raises(ValueError, match="positive sum"):
        mixture(built, conflict_root, weights=[0.0, 0.0])


def test_the_mixture_refuses_a_subsets_own_reader(built, conflict_root):
    subsets = {"multiturn": MultiTurnDataModule(built, SMALL, reader=ReaderConfig(max_tokens=512))}
    with pytest.raises(ValueError, match=r"subset 'multiturn' sets reader \{'max_tokens': 512\}"):
        MixtureDataModule(subsets)


def test_the_alignment_subset_builds_and_packs(tmp_path):
    build = AlignmentSpec(num_samples=6, val_size=3, samples_per_shard=3)
    dm = AlignmentDataModule(tmp_path, build, **options())
    dm.prepare_data()
    dm.setup("fit")
    stats = dm.manifest["stats"]
    assert (stats["positive_samples"], stats["negative_samples"]) == (2, 4)
    assert isinstance(next(iter(dm.train_dataloader())), PackedBatch)


def test_the_single_pass_layout_trains_the_prompt_and_final_image_a_step(built, tmp_path):
    """The single-pass baseline reads the same shards: each sample is its prompt and final image only."""
    from pdgen.lit.module import ProcessDrivenModule, ScheduleConfig

    dm = module(built, layout="single_pass", prompt_dropout=0.0)
    batch = next(iter(dm.train_dataloader()))
    assert batch.split_modes == ["causal", "noise"] * len(batch.sample_lens)
    assert batch.ce_loss_indexes.numel() == 0 and batch.packed_vit_tokens.shape[0] == 0
    model = ProcessDrivenModule("tiny", schedule=ScheduleConfig(warmup_steps=1))
    trainer(1, default_root_dir=tmp_path, enable_checkpointing=False).fit(model, dm)
    loss = float(model.trainer.callback_metrics["train/loss"])
    assert 0 < loss < float("inf")
