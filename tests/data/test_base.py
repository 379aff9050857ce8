"""The base stage's data: caption pairs built into shards like every subset, read as text -> image or image ->
caption packs, resumed at the exact pack, corrupt samples counted."""

import io
import tarfile

import pytest
import torch

from pdgen.data.base import BaseDataModule, BaseSpec, base_sample
from pdgen.data.packing import CeRole, PackedBatch
from pdgen.data.reading import ReaderConfig
from pdgen.data.tokenizer import load_tokenizer
from pdgen.trajectory import Sketch, Trajectory

SMALL = BaseSpec(
    num_samples=64, val_size=6, tokenizer_trajectories=20, tokenizer_critiques=20, samples_per_shard=16
)
READER = ReaderConfig(max_tokens=512, shuffle_buffer=16, layout="caption", num_workers=0)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """4 training shards of 16 caption pairs, one validation shard, the tokenizer (with 20 plans' text and
    20 conflict and 20 alignment samples')."""
    root = tmp_path_factory.mktemp("base")
    BaseDataModule(root, SMALL).prepare_data()
    return root


def module(root, **overrides) -> BaseDataModule:
    dm = BaseDataModule(root, SMALL, **{"reader": READER, **overrides})
    dm.prepare_data()
    dm.setup("fit")
    return dm


def fingerprint(batch: PackedBatch) -> tuple:
    pixels = sum(float(image.sum()) for image in batch.vae_images) + float(batch.packed_vit_tokens.sum())
    return tuple(batch.sample_lens), tuple(batch.packed_text_ids.tolist()), round(pixels, 3)


def take(loader, n: int) -> list[tuple]:
    iterator = iter(loader)
    return [fingerprint(next(iterator)) for _ in range(n)]


def test_a_sample_is_a_caption_and_the_picture_it_describes():
    spec = BaseSpec(num_samples=8, describe=0.5)
    samples = [base_sample(spec, i) for i in range(40)]
    assert all(len(s.steps) == 1 and isinstance(s.steps[0], Sketch) for s in samples)
    prompts = [s for s in samples if s.prompt.startswith("a photo of")]
    descriptions = [s for s in samples if s.prompt.startswith(("The scene shows", "An empty"))]
    assert prompts and descriptions and len(prompts) + len(descriptions) == 40
    assert base_sample(spec, 3).to_files() == base_sample(spec, 3).to_files()  # a function of (seed, index)


def test_a_caption_pair_is_a_one_pass_trajectory_that_round_trips():
    pair = base_sample(BaseSpec(num_samples=1), 0)
    text = pair.to_text()
    assert text.endswith("<|vision_start|><|image_pad|><|vision_end|><|im_end|>")
    assert Trajectory.from_text(text, [pair.steps[0].image]).to_files() == pair.to_files()


@pytest.mark.parametrize(
    "inspection",
    [
        "So the step conflicts with the prompt: it draws a circle where the prompt asks for a square.",
        "The step asks for a red circle; the image shows nothing. So the image does not follow the step.",
        "A square is not drawn yet; a later step adds it, so that is not an error here.",
    ],
)
def test_the_tokenizer_reads_inspections_word_by_word(built, inspection):
    """A word the tokenizer never saw is spelled out byte by byte; the inspector's words are learned."""
    tokens = load_tokenizer(built / "tokenizer")(inspection)["input_ids"]
    punctuation = sum(inspection.count(mark) for mark in ",.:;")
    assert len(tokens) <= len(inspection.split()) + punctuation


def test_packs_hold_text_to_image_and_image_to_caption_samples(built):
    dm = module(built, image_to_text=0.5)
    batch = next(iter(dm.train_dataloader()))
    assert 0.97 * 512 <= batch.sequence_length <= 512
    # Text-to-image samples: noised latents only, no clean copy; image-to-text ones: a ViT copy and CE.
    assert batch.packed_timesteps.isnan().all()
    assert batch.mse_loss_indexes.numel() == batch.packed_vae_token_indexes.numel() > 0
    assert batch.packed_vit_tokens.shape[0] > 0
    assert batch.ce_loss_indexes.numel() > 0 and (batch.ce_roles == CeRole.INSPECT).all()


def test_validation_reads_every_held_out_pair_once(built):
    batches = list(module(built).val_dataloader())
    assert sum(len(b.sample_lens) for b in batches) == SMALL.val_size


def test_state_dict_resumes_at_the_next_pack(built):
    first = module(built)
    uninterrupted = take(first.train_dataloader(), 6)
    first.packs_consumed = 2
    resumed = module(built)
    resumed.load_state_dict(first.state_dict())
    assert take(resumed.train_dataloader(), 4) == uninterrupted[2:]


def test_a_corrupt_pair_is_counted_and_training_goes_on(built, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(built, root)
    shard = root / "train-000001.tar"
    with tarfile.open(shard) as tar:
        members = [(info, tar.extractfile(info).read()) for info in tar if info.isfile()]
    with tarfile.open(shard, "w") as tar:
        for info, data in members:
            if info.name.endswith(".png"):  # every pair of this shard loses its picture
                data = data[:20]
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    dm = module(root)
    assert len(set(take(dm.train_dataloader(), 6))) == 6
    assert sum(dm.skipped_samples.values()) >= 16 and sum(dm.skipped_samples.values()) % 16 == 0


def test_the_base_stage_trains_a_step(built, tmp_path):
    import lightning as L

    from pdgen.lit.module import ProcessDrivenModule, ScheduleConfig

    dm = BaseDataModule(built, SMALL, reader=READER)
    model = ProcessDrivenModule("tiny", schedule=ScheduleConfig(warmup_steps=1))
    trainer = L.Trainer(
        max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(model, dm)
    assert torch.isfinite(torch.tensor(float(trainer.callback_metrics["train/loss"])))
