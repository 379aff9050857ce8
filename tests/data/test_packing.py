"""Packing: hand-built trajectories laid out split by split, and collated packs."""

import pytest
import torch
from PIL import Image

from pdgen.data.packing import (
    CeRole,
    CeTarget,
    TextSplit,
    TrajectoryPacker,
    image_grid,
)
from pdgen.data.packing_config import PackingConfig
from pdgen.data.tokenizer import SpecialTokenIds, encode_text
from pdgen.models.mask import PackedAttentionMeta
from pdgen.trajectory import Inspect, Plan, Refine, Sketch, Trajectory

TINY = PackingConfig.from_name("tiny")  # 16 px latent tokens, 8 px ViT patches, images 32-64 px
PLAN, INSPECT, SPECIAL = CeRole.PLAN, CeRole.INSPECT, CeRole.SPECIAL


def image(width=64, height=64, color="white"):
    return Image.new("RGB", (width, height), color)


def plan_text(plan):
    return f"<ins>{plan.ins}</ins><des>{plan.des}</des>"


def layout(sample):
    """(kind, mode, tokens, RoPE id) per split: the shape of a sample at a glance."""
    return [
        ("text" if isinstance(s, TextSplit) else s.kind, s.mode, s.num_tokens, s.position)
        for s in sample.splits
    ]


@pytest.fixture
def ids(tokenizer):
    return SpecialTokenIds.from_tokenizer(tokenizer)


def test_plan_sketch_plan_sketch(tokenizer, ids):
    first, second = (
        Plan("Add a red circle.", "A red circle."),
        Plan("Add a blue square.", "A square, a circle."),
    )
    trajectory = Trajectory("a circle and a square", [first, Sketch(image()), second, Sketch(image())])
    sample = TrajectoryPacker(tokenizer, TINY).sample(trajectory)

    n_prompt = len(encode_text(tokenizer, "a circle and a square")) + 2
    n_first = len(encode_text(tokenizer, plan_text(first))) + 2
    n_second = len(encode_text(tokenizer, plan_text(second))) + 2
    r1 = n_prompt + n_first  # the first image's RoPE id
    r2 = r1 + 1 + n_second
    assert layout(sample) == [
        ("text", "causal", n_prompt, 0),
        ("text", "causal", n_first, n_prompt),
        ("vae", "noise", 4 * 4 + 2, r1),  # 64 px / 16 px = 4 x 4 latent tokens + two markers
        ("vae", "full", 4 * 4 + 2, r1),  # the clean copy shares the noised copy's id ...
        ("text", "causal", n_second, r1 + 1),  # ... and only then the id advances
        ("vae", "noise", 18, r2),
        ("vae", "full", 18, r2),
    ]
    prompt, plan1, noised, clean1, plan2, _, clean2 = sample.splits
    assert prompt.labels == ()  # the user prompt gets no loss
    assert [label.role for label in plan1.labels] == [PLAN] * (n_first - 1) + [SPECIAL]
    assert [label.target for label in plan1.labels] == [*plan1.ids[1:], ids.vision_start]  # ... then draw
    assert noised.labels == ()  # nothing reads a noised split, nothing is predicted from it
    assert clean1.labels == (CeTarget(17, ids.im_start, SPECIAL),)  # at <|vision_end|>: continue
    assert clean2.labels[0].target == ids.im_end and clean2.labels[0].role == SPECIAL  # stop: the answer
    assert plan2.ids[0] == ids.im_start and plan2.ids[-1] == ids.im_end


def test_inspected_step_is_understood_and_criticised_step_is_context(tokenizer, ids):
    draft, fix = Plan("Add a bird.", "A bird above."), Plan("Move the bird.", "A bird below.")
    critique = Inspect("The bird is above the board.", refine="Put the bird below the board.")
    trajectory = Trajectory("a bird below a board", [draft, Sketch(image()), critique, Refine(fix, image())])
    sample = TrajectoryPacker(tokenizer, TINY).sample(trajectory)

    n_prompt = len(encode_text(tokenizer, "a bird below a board")) + 2
    n_draft = len(encode_text(tokenizer, plan_text(draft))) + 2
    n_critique = len(encode_text(tokenizer, critique.text + "<refine>" + critique.refine + "</refine>")) + 2
    n_fix = len(encode_text(tokenizer, plan_text(fix))) + 2
    r = n_prompt + n_draft
    r_fix = r + 2 + n_critique + n_fix
    assert layout(sample) == [
        ("text", "causal", n_prompt, 0),
        ("text", "causal", n_draft, n_prompt),
        ("vae", "full", 18, r),  # the flawed draft: clean context only, no noised copy (no MSE)
        ("vit", "full", 8 * 8 + 2, r + 1),  # judged by the Inspect: the model must understand it
        ("text", "causal", n_critique, r + 2),
        ("text", "causal", n_fix, r + 2 + n_critique),
        ("vae", "noise", 18, r_fix),
        ("vae", "full", 18, r_fix),
    ]
    _, draft_split, _, vit, critique_split, fix_split, _, _ = sample.splits
    assert draft_split.labels == ()  # never learn to write the plan the inspection rejects
    assert vit.labels == (vit.labels[0],) and vit.labels[0].target == ids.im_start  # go on to inspect
    assert {label.role for label in critique_split.labels[:-1]} == {INSPECT}
    assert critique_split.labels[-1].target == ids.im_start and critique_split.labels[-1].role == SPECIAL
    assert fix_split.labels[-1].target == ids.vision_start

    trained = TrajectoryPacker(tokenizer, PackingConfig.from_name("tiny", train_criticised=True)).sample(
        trajectory
    )
    assert [s.mode for s in trained.splits[2:5]] == ["noise", "full", "full"]
    assert trained.splits[1].labels[0].role == PLAN


def test_input_image_is_context_with_vae_and_vit(tokenizer):
    trajectory = Trajectory(
        "make it red", [Plan("Recolor.", "Red."), Sketch(image())], input_image=image(32, 32)
    )
    sample = TrajectoryPacker(tokenizer, TINY).sample(trajectory)
    vae, vit, prompt = sample.splits[:3]
    assert layout(sample)[:3] == [
        ("vae", "full", 2 * 2 + 2, 0),
        ("vit", "full", 4 * 4 + 2, 1),
        ("text", "causal", prompt.num_tokens, 2),
    ]
    assert vae.labels == vit.labels == prompt.labels == ()


def test_dropped_conditions_leave_their_tokens_out(tokenizer):
    trajectory = Trajectory(
        "make it red", [Plan("Recolor.", "Red."), Sketch(image())], input_image=image(32, 32)
    )
    packer = TrajectoryPacker(tokenizer, TINY)
    full = packer.sample(trajectory)
    no_prompt = packer.sample(trajectory, drop_prompt=True)
    assert [s.mode for s in no_prompt.splits] == ["full", "full", "causal", "noise", "full"]
    assert no_prompt.splits[2].position == 2  # the plan follows the image directly: no prompt tokens

    no_image = packer.sample(trajectory, drop_input_image=True)
    assert [s.mode for s in no_image.splits] == ["causal", "causal", "noise", "full"]
    assert no_image.splits[0].position == 2  # the image's two RoPE ids stay reserved, as in BAGEL
    assert no_image.splits[1:] == full.splits[3:]


def test_dropped_text_keeps_only_the_images_and_no_label(tokenizer):
    """The unconditional context of guidance by images alone: no prompt, plan or inspection, no CE label (a
    decision would now predict the wrong next token), every MSE target kept, RoPE ids one per image copy."""
    trajectory = Trajectory(
        "a circle and a square",
        [Plan("Add a circle.", "A circle."), Sketch(image()), Plan("Add a square.", "Two."), Sketch(image())],
    )
    packer = TrajectoryPacker(tokenizer, TINY)
    sample = packer.sample(trajectory, drop_text=True)
    assert layout(sample) == [
        ("vae", "noise", 4 * 4 + 2, 0),
        ("vae", "full", 4 * 4 + 2, 0),
        ("vae", "noise", 4 * 4 + 2, 1),
        ("vae", "full", 4 * 4 + 2, 1),
    ]
    assert all(split.labels == () for split in sample.splits)
    full = packer.sample(trajectory)
    assert sum(s.noised for s in sample.splits) == sum(getattr(s, "noised", False) for s in full.splits)


def test_dropped_images_keep_the_plans_where_the_loop_writes_them(tokenizer, ids):
    """The planner's lesson alone: the prompt and the plans with their labels, no image split; each image's
    RoPE ids stay reserved, so every text keeps the position it has in the full sample, and a plan still
    predicts the ``<|vision_start|>`` that the loop answers with an image."""
    trajectory = Trajectory(
        "a circle and a square",
        [Plan("Add a circle.", "A circle."), Sketch(image()), Plan("Add a square.", "Two."), Sketch(image())],
    )
    packer = TrajectoryPacker(tokenizer, TINY)
    full, plans = packer.sample(trajectory), packer.sample(trajectory, drop_images=True)
    assert {s.mode for s in plans.splits} == {"causal"}
    assert plans.splits == tuple(s for s in full.splits if isinstance(s, TextSplit))
    assert plans.splits[1].labels[-1].target == ids.vision_start
    assert plans.num_tokens < full.num_tokens / 2


def test_dropped_images_keep_an_inspection_as_context_only(tokenizer):
    """An inspection judges an image; without the image its verdict is no lesson."""
    trajectory = Trajectory(
        "a circle",
        [Plan("Add a circle.", "A circle."), Sketch(image()), Inspect("Right.", None), Plan("Add.", "Two."),
         Sketch(image())],
    )  # fmt: skip
    plans = TrajectoryPacker(tokenizer, TINY).sample(trajectory, drop_images=True)
    assert [len(s.labels) > 0 for s in plans.splits] == [False, True, False, True]


def test_text_to_image_is_a_caption_and_one_noised_copy(tokenizer):
    """BAGEL's text-to-image sample (the base stage, single pass): nothing follows the image, so it has no
    clean copy and decides nothing; the image takes the RoPE id after the caption, as the loop queries it."""
    packer = TrajectoryPacker(tokenizer, TINY)
    caption = "a photo of a red circle"
    n_caption = len(encode_text(tokenizer, caption)) + 2
    sample = packer.text_to_image(caption, image())
    assert layout(sample) == [("text", "causal", n_caption, 0), ("vae", "noise", 4 * 4 + 2, n_caption)]
    assert all(split.labels == () for split in sample.splits)
    assert layout(packer.text_to_image(caption, image(), drop_caption=True)) == [("vae", "noise", 18, 0)]


def test_image_to_text_reads_the_image_and_trains_its_caption(tokenizer, ids):
    packer = TrajectoryPacker(tokenizer, TINY)
    caption = "a photo of a red circle"
    body = encode_text(tokenizer, caption)
    vit, text = packer.image_to_text(image(), caption).splits
    assert (vit.kind, vit.mode, vit.labels) == ("vit", "full", ())
    assert text.position == 1 and text.ids == (ids.im_start, *body, ids.im_end)
    targets = [(label.target, label.role) for label in text.labels]
    assert targets == [(t, INSPECT) for t in (*body, ids.im_end)]


def test_vit_images_all_gives_every_generated_image_a_vit_copy(tokenizer):
    trajectory = Trajectory("a star", [Plan("Add a star.", "A star."), Sketch(image())])
    config = PackingConfig.from_name("tiny", vit_images="all")
    assert [s.mode for s in TrajectoryPacker(tokenizer, config).sample(trajectory).splits] == [
        "causal",
        "causal",
        "noise",
        "full",
        "full",
    ]


def test_collate_fills_every_field_consistently(tokenizer, ids):
    critique = Inspect("Looks right.")
    one = Trajectory(
        "a red circle",
        [
            Plan("Add a circle.", "A circle."),
            Sketch(image(64, 48)),
            critique,
            Plan("Add a dot.", "A dot."),
            Sketch(image()),
        ],
    )
    two = Trajectory("a square", [Plan("Add a square.", "A square."), Sketch(image(32, 64))])
    packer = TrajectoryPacker(tokenizer, TINY)
    samples = [packer.sample(one), packer.sample(two)]
    batch = packer.collate(samples)

    T = batch.sequence_length
    assert T == sum(s.num_tokens for s in samples) == sum(batch.sample_lens) == sum(batch.split_lens)
    assert batch.sample_lens == [s.num_tokens for s in samples]
    assert batch.split_modes == [s.mode for sample in samples for s in sample.splits]
    # Text, VAE and ViT tokens partition the sequence.
    everything = torch.cat(
        [batch.packed_text_indexes, batch.packed_vae_token_indexes, batch.packed_vit_token_indexes]
    )
    assert torch.equal(everything.sort().values, torch.arange(T))
    assert batch.packed_position_ids.shape == (T,)
    assert batch.packed_position_ids[batch.sample_lens[0]] == 0  # RoPE restarts per sample

    # Next-token labels: inside a text split the label is the next packed text token.
    text_at = dict(zip(batch.packed_text_indexes.tolist(), batch.packed_text_ids.tolist(), strict=True))
    for index, label, role in zip(
        batch.ce_loss_indexes.tolist(), batch.packed_label_ids.tolist(), batch.ce_roles.tolist(), strict=True
    ):
        if role != SPECIAL:
            assert text_at[index + 1] == label
    assert batch.ce_roles.tolist().count(SPECIAL) == 5 + 2  # one decision per plan, inspect and image

    # Images: one (3, H, W) tensor per VAE split, latent grids (rows, cols), timesteps to be sampled.
    assert batch.vae_latent_shapes == [(3, 4), (3, 4), (4, 4), (4, 4), (4, 2), (4, 2)]
    assert [tuple(x.shape) for x in batch.vae_images][:2] == [(3, 48, 64), (3, 48, 64)]
    assert all(x.min() >= -1.0 and x.max() <= 1.0 for x in batch.vae_images)
    noised = torch.isnan(batch.packed_timesteps)
    assert noised.sum() == batch.mse_loss_indexes.numel() == 12 + 16 + 8
    assert torch.equal(batch.packed_vae_token_indexes[noised], batch.mse_loss_indexes)
    assert torch.all(batch.packed_timesteps[~noised] == 0.0)
    assert batch.packed_latent_position_ids[:12].tolist() == [r * 16 + c for r in range(3) for c in range(4)]
    assert batch.vit_token_seqlens.tolist() == [6 * 8]  # the inspected 64 x 48 image, 8 px patches
    assert batch.packed_vit_tokens.shape == (48, 3 * 8 * 8)
    assert batch.packed_vit_position_ids[:9].tolist() == [*range(8), 16]


def test_vit_patches_are_row_major_and_flattened_pixel_by_pixel(tokenizer):
    # Each pixel's red channel holds its column, green its row: the patch layout can be read back.
    picture = Image.new("RGB", (16, 8))
    picture.putdata([(x * 10, y * 10, 0) for y in range(8) for x in range(16)])
    picture = picture.resize((32, 32), Image.Resampling.NEAREST)  # the tiny ViT minimum side is 32 px
    config = PackingConfig.from_name("tiny", vit_images="all")
    trajectory = Trajectory("p", [Plan("a", "b"), Sketch(picture)])
    packer = TrajectoryPacker(tokenizer, config)
    batch = packer.collate([packer.sample(trajectory)])
    patches = batch.packed_vit_tokens.reshape(16, 8, 8, 3)  # (patch, row, col, channel)
    to_pixel = lambda v: torch.round((v + 1) * 127.5)  # noqa: E731
    # Patch 1 is the second patch of the first row: columns 8..15 of the 32 px image -> source columns 4..7.
    assert to_pixel(patches[1, 0, :, 0]).tolist() == [40, 40, 50, 50, 60, 60, 70, 70]
    assert to_pixel(patches[4, :, 0, 1]).tolist() == [20, 20, 20, 20, 30, 30, 30, 30]  # second patch row


def test_attention_meta_follows_the_layout(tokenizer):
    trajectory = Trajectory("a circle", [Plan("Add a circle.", "A circle."), Sketch(image(32, 32))])
    packer = TrajectoryPacker(tokenizer, TINY)
    sample = packer.sample(trajectory)
    batch = packer.collate([sample, sample])
    mask = batch.attention_meta().dense_mask()
    n = sample.num_tokens
    noise_start = sample.splits[0].num_tokens + sample.splits[1].num_tokens
    noise = slice(noise_start, noise_start + sample.splits[2].num_tokens)
    clean = slice(noise.stop, n)
    assert not mask[n:, :n].any() and not mask[:n, n:].any()  # samples never see each other
    assert (
        mask[noise, : noise.start].all() and mask[noise, noise].all()
    )  # the target sees the prefix and itself
    assert not mask[clean, noise].any()  # the clean copy never reads the noised one
    assert mask[clean, clean].all()  # bidirectional inside a clean image


def test_collate_builds_the_attention_masks_so_the_step_does_not(tokenizer):
    """The masks are the DataLoader worker's work: the batch carries them, and moving it to the device it is
    on already (Lightning does, on the CPU too) keeps them."""
    packer = TrajectoryPacker(tokenizer, TINY)
    trajectory = Trajectory("a circle", [Plan("Add a circle.", "A circle."), Sketch(image(32, 32))])
    sample = packer.sample(trajectory)
    batch = packer.collate([sample, sample])
    meta = batch.attention_meta()
    assert meta is batch.attention and ("sdpa", torch.float32) in meta._cache
    assert torch.equal(meta.dense_mask(), PackedAttentionMeta.from_splits(
        batch.sample_lens, batch.split_lens, batch.split_modes).dense_mask())
    assert batch.to("cpu").attention_meta() is meta
    moved = batch.to("meta").attention_meta()
    assert moved.sample_id.is_meta and not moved._cache


def test_pad_to_appends_a_padding_sample(tokenizer, ids):
    trajectory = Trajectory("a circle", [Plan("Add a circle.", "A circle."), Sketch(image(32, 32))])
    packer = TrajectoryPacker(tokenizer, TINY)
    sample = packer.sample(trajectory)
    batch = packer.collate([sample], pad_to=sample.num_tokens + 10)
    assert batch.sample_lens == [sample.num_tokens, 10] and batch.split_modes[-1] == "causal"
    assert batch.packed_text_ids[-10:].tolist() == [ids.pad] * 10
    assert batch.packed_position_ids[-10:].tolist() == list(range(10))
    assert batch.ce_loss_indexes.max() < sample.num_tokens
    with pytest.raises(ValueError, match=f"{sample.num_tokens} tokens, more than pad_to=5"):
        packer.collate([sample], pad_to=5)


def test_padded_batch_pads_every_sample_to_the_longest(tokenizer, ids):
    packer = TrajectoryPacker(tokenizer, TINY)
    short = packer.sample(Trajectory("a", [Plan("a", "b"), Sketch(image(32, 32))]))
    long = packer.sample(Trajectory("a b c", [Plan("Add a circle.", "A circle."), Sketch(image())]))
    padded = packer.collate_padded([short, long])
    packed = packer.collate([short, long])
    assert padded.sample_lens == [long.num_tokens] * 2
    pad = long.num_tokens - short.num_tokens
    text_at = dict(zip(padded.packed_text_indexes.tolist(), padded.packed_text_ids.tolist(), strict=True))
    assert [text_at.get(i) for i in range(short.num_tokens, long.num_tokens)] == [ids.pad] * pad
    last_rope = short.splits[-1].position  # padding continues the sample's RoPE ids
    assert padded.packed_position_ids[short.num_tokens].item() == last_rope + 1
    assert padded.ce_loss_indexes.numel() == packed.ce_loss_indexes.numel()
    assert padded.mse_loss_indexes.numel() == packed.mse_loss_indexes.numel()


def test_to_moves_every_tensor(tokenizer):
    packer = TrajectoryPacker(tokenizer, TINY)
    batch = packer.collate([packer.sample(Trajectory("a", [Plan("a", "b"), Sketch(image(32, 32))]))])
    moved = batch.to("meta")
    assert (
        moved.packed_position_ids.is_meta and moved.vae_images[0].is_meta and moved.vit_token_seqlens.is_meta
    )
    assert moved.sample_lens == batch.sample_lens and batch.packed_position_ids.device.type == "cpu"


def test_image_sizes_follow_the_config():
    big = PackingConfig.from_name("bagel-7b-mot")
    assert image_grid((1024, 768), big.vae_min_size, big.vae_max_size, 16) == (48, 64)
    assert image_grid((2048, 2048), big.vae_min_size, big.vae_max_size, 16) == (64, 64)  # shrunk to 1024
    assert image_grid((256, 128), big.vae_min_size, big.vae_max_size, 16) == (32, 64)  # grown: short side 512
    assert image_grid((4000, 100), big.vae_min_size, big.vae_max_size, 16) == (2, 64)  # the long side wins
