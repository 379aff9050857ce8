"""tools/bench_train.py: the dense reference trains on the pack's own samples, row by row."""


import pytest
import torch
from toolkit import imported_tool

from pdgen.data.packing import PackingConfig, TrajectoryPacker
from pdgen.data.tokenizer import train_tokenizer
from pdgen.models.bagel import BagelConfig
from pdgen.world.shapes import PALETTE


@pytest.fixture(scope="module")
def bench_train():
    yield from imported_tool("bench_train")


@pytest.fixture(scope="module")
def packer(bench_train):
    captions = [f"a {colour} square at the {place}" for colour in PALETTE for place in bench_train.PLACES]
    tokenizer = train_tokenizer(captions * 4, vocab_size=320)
    packing = PackingConfig.from_name("tiny").for_trunk(BagelConfig.from_name("embedded"))
    return TrajectoryPacker(tokenizer, packing)


def test_single_image_samples_are_a_caption_and_one_noised_image_or_its_reverse(bench_train, packer):
    pack = packer.collate(bench_train.single_image_samples(packer, 8))
    text_to_image, image_to_text = ["causal", "noise"], ["full", "causal"]
    assert pack.split_modes == (text_to_image * 3 + image_to_text) * 2
    assert pack.vae_latent_shapes == [(8, 8)] * 6, "32 px images: 64 latent tokens each"
    assert pack.mse_loss_indexes.numel() == 6 * 64
    assert pack.vit_token_seqlens.tolist() == [16, 16]


def test_the_dense_batch_holds_each_sample_in_its_own_row(bench_train, packer):
    pack = packer.collate(bench_train.single_image_samples(packer, 4))
    batch = bench_train.DenseBatch(pack, latent_dim=48, pad_id=packer.ids.pad)
    assert tuple(batch.ids.shape) == (4, max(pack.sample_lens))
    first = pack.sample_lens[0]
    text_of_first = pack.packed_text_indexes < first
    row = batch.ids[0, pack.packed_text_indexes[text_of_first]]
    assert torch.equal(row, pack.packed_text_ids[text_of_first])
    assert batch.ids[3, pack.sample_lens[3] :].eq(packer.ids.pad).all(), "short rows are right-padded"
    packed_ids = torch.full((pack.sequence_length,), -1)
    packed_ids[pack.packed_text_indexes] = pack.packed_text_ids
    assert torch.equal(batch.ids.flatten()[batch.ce_rows], packed_ids[pack.ce_loss_indexes])
    assert torch.equal(batch.labels, pack.packed_label_ids)
    assert batch.mse_rows.numel() == pack.mse_loss_indexes.numel() == batch.velocity_target.shape[0]


def test_the_dense_reference_trains_on_the_batch(bench_train, packer):
    pack = packer.collate(bench_train.single_image_samples(packer, 4))
    config = BagelConfig.from_name("embedded")
    model = bench_train.DenseReference(config.llm, config.patch_latent_dim)
    step = bench_train.reference_step(model, bench_train.DenseBatch(pack, 48, packer.ids.pad))
    before = model.lm_head.weight.detach().clone()
    step()
    assert not torch.equal(model.lm_head.weight, before)
