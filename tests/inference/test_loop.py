"""The interleaved loop: KV-cache acceptance, training's layout, stop rule, caps, seeds, costs, errors."""

import dataclasses

import numpy as np
import pytest
import torch
from inference_testkit import CRITIQUE, PLAN_1, PLAN_2, REFINE, refine_script
from PIL import Image

from pdgen.data.packing import ImageSplit, PackingConfig, TrajectoryPacker
from pdgen.inference import GenerationConfig, Script, generate
from pdgen.inference import context as context_module
from pdgen.inference import loop as loop_module
from pdgen.models.bagel import sample_timesteps
from pdgen.trajectory import IM_END, IM_START, VISION_START, Inspect, Plan, Refine, Sketch, stop_index

PROMPT = "a red circle and a blue square"


def pixels(image):
    return np.asarray(image)


def picture(width, height, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def same_generation(a, b):
    assert a.token_ids == b.token_ids and a.text == b.text and a.stop_reason == b.stop_reason
    assert len(a.images) == len(b.images)
    for x, y in zip(a.images, b.images, strict=True):
        np.testing.assert_array_equal(pixels(x), pixels(y))


# ---- the KV-cache acceptance test ------------------------------------------------------------------------


@pytest.mark.parametrize("draft_tokens", [0, 4])
def test_the_cached_loop_equals_recomputing_the_whole_prefix_every_step(
    talkative, tokenizer, packing, draft_tokens
):
    """An edit with sampled text written by the model, both guidance contexts, an inspection and a refine:
    the KV cache and the packed forward over the whole prefix give the same tokens and the same pixels
    (also with prompt-lookup drafts, which the model rejects here and either sequence takes back)."""
    trunk = talkative.double()  # float64, so that rounding never flips a sampled token or a pixel
    config = GenerationConfig.from_name(
        "tiny",
        num_timesteps=4,
        do_sample=True,
        temperature=1.0,
        cfg_img_scale=1.5,
        cfg_interval=(0.0, 1.0),
        draft_tokens=draft_tokens,
    )
    runs = {
        kv: generate(
            trunk,
            tokenizer,
            PROMPT,
            dataclasses.replace(config, kv_cache=kv),
            3,
            packing,
            controller=refine_script(texts=False),
            input_image=picture(48, 32),
        )
        for kv in (True, False)
    }
    same_generation(runs[True], runs[False])
    cached = runs[True]
    assert len(cached.images) == 2 and cached.costs.text_tokens > 3, "the run must exercise text and images"
    assert cached.costs.drafted_tokens > cached.costs.drafted_tokens_kept or not draft_tokens
    assert dataclasses.replace(cached.costs, wall_time_s=0) == dataclasses.replace(
        runs[False].costs, wall_time_s=0
    )


@pytest.mark.parametrize("kv_cache", [True, False])
def test_greedy_text_with_drafted_tokens_is_the_text_decoded_one_token_a_pass(
    trunk, tokenizer, fast, packing, kv_cache
):
    """A random model's greedy text repeats itself, so prompt lookup drafts tokens it keeps: the same text
    in fewer passes."""
    trunk = trunk.double()  # no rounding tie between a block of tokens and one token a pass
    runs = {
        k: generate(
            trunk,
            tokenizer,
            PROMPT,
            dataclasses.replace(fast, max_text_tokens=40, draft_tokens=k, kv_cache=kv_cache),
            0,
            packing,
        )
        for k in (0, 6)
    }
    same_generation(runs[0], runs[6])
    plain, drafted = runs[0].costs, runs[6].costs
    assert drafted.text_tokens == plain.text_tokens == 40 and drafted.drafted_tokens_kept > 5
    # Each kept draft saves its pass; the last pass may hold kept drafts past the text cap.
    assert drafted.forward_passes <= plain.forward_passes - drafted.drafted_tokens_kept + 1


class Editor:
    """A reviewer: `script` decides, the model's k-th text is replaced by ``replacements[k]`` (None keeps
    it); it records what it was shown."""

    def __init__(self, script, replacements):
        self.script, self.replacements = script, list(replacements)
        self.shown = []

    def write(self, state):
        return self.script.write(state)

    def decide(self, state, options, proposed):
        return self.script.decide(state, options, proposed)

    def review(self, state, text):
        self.shown.append((state.after, text))
        return self.replacements[len(self.shown) - 1] if len(self.shown) <= len(self.replacements) else None


@pytest.mark.parametrize("kv_cache", [True, False])
def test_a_reviewed_text_replaced_in_place_equals_dictating_it_from_the_start(
    talkative, tokenizer, packing, kv_cache
):
    """The model's first plan and its inspection are replaced after it wrote them: the run is, token for
    token and pixel for pixel, the run in which both were dictated, with sampled text and both guidances."""
    config = GenerationConfig.from_name(
        "tiny",
        num_timesteps=3,
        do_sample=True,
        temperature=1.0,
        cfg_img_scale=1.5,
        cfg_interval=(0.0, 1.0),
        kv_cache=kv_cache,
    )
    critique = f"{CRITIQUE}<refine>{REFINE}</refine>"
    editor = Editor(refine_script(texts=False), [PLAN_1, critique])
    dictated_script = Script(refine_script().decisions, [PLAN_1, critique])
    reviewed, dictated = (
        generate(talkative, tokenizer, PROMPT, config, 3, packing, controller=controller)
        for controller in (editor, dictated_script)
    )
    same_generation(reviewed, dictated)
    assert reviewed.text.count(PLAN_1) == reviewed.text.count(critique) == 1
    assert [after for after, _ in editor.shown] == ["prompt", "image", "text"]  # the model's plan 2 kept
    assert editor.shown[2][1] in reviewed.text

    # The texts taken back cost what they ran (one pass for <|im_start|>, one per token), guidance nothing.
    extra_tokens = reviewed.costs.text_tokens - dictated.costs.text_tokens
    assert extra_tokens > 0
    assert reviewed.costs.forward_passes - dictated.costs.forward_passes == extra_tokens + 2
    assert reviewed.costs.cfg_passes == dictated.costs.cfg_passes


# ---- the layout is training's --------------------------------------------------------------------------


class RecordingSequence(context_module.RecomputedSequence):
    """The recomputing reference, remembering every instance (the first one is the conditional context)."""

    made: list["RecordingSequence"] = []

    def __init__(self, trunk):
        super().__init__(trunk)
        RecordingSequence.made.append(self)


@pytest.mark.parametrize(("vit_images", "input_image"), [("inspected", None), ("all", picture(48, 32))])
def test_the_context_is_what_training_packs_without_the_noised_copies(
    trunk, tokenizer, fast, vit_images, input_image, monkeypatch
):
    packing = PackingConfig.from_name("tiny", vit_images=vit_images)
    RecordingSequence.made = []
    monkeypatch.setattr(context_module, "RecomputedSequence", RecordingSequence)
    config = dataclasses.replace(fast, kv_cache=False)
    result = generate(
        trunk, tokenizer, PROMPT, config, 0, packing, controller=refine_script(), input_image=input_image
    )
    assert result.error is None, result.error
    written = RecordingSequence.made[0].blocks

    packer = TrajectoryPacker(tokenizer, packing)
    sample = packer.sample(result.trajectory)
    splits = [s for s in sample.splits if not (isinstance(s, ImageSplit) and s.noised)]
    pack = packer.collate([sample])
    pack.packed_timesteps = sample_timesteps(pack)
    assert [b.embeds.shape[0] for b, _ in written] == [s.num_tokens for s in splits]
    assert [b.kind for b, _ in written] == ["image" if isinstance(s, ImageSplit) else "text" for s in splits]
    assert [int(p[0]) for _, p in written] == [s.position for s in splits]
    vit_copies = 1 if vit_images == "inspected" else 2 + 1  # "all": both images and the input image
    assert [s.kind for s in splits if isinstance(s, ImageSplit)].count("vit") == vit_copies

    # Token for token: text and ViT tokens embed as in training (clean VAE latents are posterior samples).
    with torch.no_grad():
        embedded = trunk.embed_pack(pack)
    kept = torch.cat([torch.arange(start, start + n) for start, n, mode in _splits(pack) if mode != "noise"])
    sequence, gen_mask = embedded.sequence[kept], embedded.gen_mask[kept]
    ours = torch.cat([b.embeds for b, _ in written])
    assert torch.equal(torch.cat([b.gen_mask for b, _ in written]), gen_mask)
    assert torch.equal(torch.cat([p for _, p in written]), pack.packed_position_ids[kept])
    torch.testing.assert_close(ours[~gen_mask], sequence[~gen_mask])


def test_each_image_is_sampled_with_the_velocity_training_supervises(
    trunk, tokenizer, fast, packing, monkeypatch
):
    """The sampler integrates what training fits: at each image's first Euler step (t = 1, x_t = its noise)
    the loop's velocity equals the training forward's at that image's noised copy, in the pack of the finished
    trajectory, given the same noise and the clean latents the loop encoded (the autoencoder samples its
    posterior). The context test above checks the clean tokens; this one the noised query."""
    first_steps, encoded = [], []  # (noise, loop velocity) of each image drawn; each latent written back
    euler_sample, encode_images = loop_module.euler_sample, trunk.encode_images

    def spy_sampler(velocity, noise, num_timesteps, shift):
        first_steps.append((noise, velocity(noise, 1.0)))
        return euler_sample(velocity, noise, num_timesteps, shift)

    def spy_encoder(images, generator=None):
        latents = encode_images(images, generator)
        encoded.extend(latents)
        return latents

    monkeypatch.setattr(loop_module, "euler_sample", spy_sampler)
    monkeypatch.setattr(trunk, "encode_images", spy_encoder)
    two_plans = Script(decisions=[VISION_START, IM_START, VISION_START, IM_END], texts=[PLAN_1, PLAN_2])
    # The conditional velocity alone; no ViT copies (nothing is inspected), as multi-turn training packs it.
    config = dataclasses.replace(fast, cfg_text_scale=1.0, inspect=False)
    result = generate(trunk, tokenizer, PROMPT, config, 0, packing, controller=two_plans)
    assert result.error is None and len(first_steps) == len(encoded) == 2

    packer = TrajectoryPacker(tokenizer, packing)
    pack = packer.collate([packer.sample(result.trajectory)])
    assert len(pack.vae_images) == 4  # per image: its noised copy, then its clean copy
    noised = torch.isin(pack.packed_vae_token_indexes, pack.mse_loss_indexes)  # (N_vae,)
    pack.packed_timesteps = noised.float()  # t = 1 on the noised copies, 0 on the clean ones
    noise = torch.zeros(noised.numel(), trunk.config.patch_latent_dim)
    noise[noised] = torch.cat([x for x, _ in first_steps])
    latents = [latent for latent in encoded for _ in range(2)]
    with torch.no_grad():
        out = trunk(pack, latents=latents, noise=noise)
        trained = trunk.velocity(out.hidden_states, pack.mse_loss_indexes)
    torch.testing.assert_close(trained, torch.cat([v for _, v in first_steps]), rtol=1e-4, atol=1e-5)


def _splits(pack):
    start = 0
    for length, mode in zip(pack.split_lens, pack.split_modes, strict=True):
        yield start, length, mode
        start += length


# ---- the paper's cycle, the stop rule and the caps --------------------------------------------------------


def test_a_scripted_cycle_parses_into_plan_sketch_inspect_refine(trunk, tokenizer, fast, packing):
    result = generate(trunk, tokenizer, PROMPT, fast, 0, packing, controller=refine_script())
    steps = result.trajectory.steps
    assert [type(s) for s in steps] == [Plan, Sketch, Inspect, Refine]
    assert steps[0] == Plan("Add a red circle.", "A red circle.")
    assert steps[2] == Inspect(CRITIQUE, REFINE)
    assert (steps[3].plan.ins, result.trajectory.answer) == ("Add a blue square.", result.final_image)
    assert result.trajectory.to_text() == result.text and PLAN_2 in result.text


def test_the_model_stops_with_im_end_right_after_an_image(trunk, tokenizer, fast, packing):
    result = generate(
        trunk, tokenizer, PROMPT, fast, 0, packing, controller=Script([VISION_START, IM_END], [PLAN_1])
    )
    ids = tokenizer.convert_tokens_to_ids
    assert result.stop_reason == "stop_token" and len(result.images) == 1
    assert stop_index(result.token_ids, ids("<|vision_end|>"), ids(IM_END)) == len(result.token_ids) - 1
    assert result.text.endswith("<|vision_end|><|im_end|>")


def test_max_images_ends_with_the_last_image_as_the_answer(trunk, tokenizer, packing):
    config = GenerationConfig.from_name("tiny", num_timesteps=3, max_images=2, inspect=False)
    script = Script([VISION_START, IM_START, VISION_START], [PLAN_1, PLAN_2])
    result = generate(trunk, tokenizer, PROMPT, config, 0, packing, controller=script)
    assert result.stop_reason == "max_images" and len(result.images) == 2
    assert [type(s) for s in result.trajectory.steps] == [Plan, Sketch, Plan, Sketch]


def test_the_text_cap_ends_a_run_and_keeps_what_the_model_wrote(trunk, tokenizer, fast, packing):
    config = dataclasses.replace(fast, max_text_tokens=7)
    result = generate(trunk, tokenizer, PROMPT, config, 0, packing)  # a random model never closes its text
    assert result.stop_reason == "max_text_tokens" and result.costs.text_tokens == 7
    assert result.trajectory is None and result.images == []
    assert "the text ends" in result.error and "it emitted" in result.error
    assert (
        len(result.token_ids) == len(tokenizer.encode(PROMPT)) + 2 + 1 + 7
    )  # prompt segment, <|im_start|>, 7


def test_what_a_random_model_emits_is_parsed_or_rejected_by_name(talkative, tokenizer, packing):
    config = GenerationConfig.from_name(
        "tiny", num_timesteps=3, do_sample=True, temperature=1.0, max_images=2
    )
    for seed in range(4):
        result = generate(talkative, tokenizer, PROMPT, config, seed, packing)
        if result.trajectory is not None:
            assert result.error is None and result.trajectory.to_text() == result.text
        else:
            assert result.error.startswith("the model's output is not a valid trajectory: at offset ")


def test_single_pass_draws_one_image_after_the_prompt(trunk, tokenizer, fast, packing):
    result = generate(trunk, tokenizer, PROMPT, dataclasses.replace(fast, mode="single_pass"), 0, packing)
    assert result.stop_reason == "single_pass" and len(result.images) == 1
    assert result.final_image.size == (64, 64)
    assert result.trajectory is None and result.error is None
    assert result.text.endswith(
        "<|im_start|>assistant\n<|vision_start|><|image_pad|><|vision_end|><|im_end|>"
    )


# ---- seeds and costs --------------------------------------------------------------------------------------


def test_a_seed_reproduces_a_run_and_another_seed_does_not(talkative, tokenizer, packing):
    config = GenerationConfig.from_name("tiny", num_timesteps=3, do_sample=True, temperature=1.0)
    first, again, other = (
        generate(
            talkative, tokenizer, PROMPT, config, seed, packing, controller=Script([VISION_START, IM_END])
        )
        for seed in (1, 1, 2)
    )
    same_generation(first, again)
    assert first.text != other.text or not np.array_equal(
        pixels(first.final_image), pixels(other.final_image)
    )


def test_the_loop_runs_in_inference_mode_whatever_the_caller_has_on(trunk, tokenizer, fast, packing):
    """A training callback calls generate with gradients on: no pass may record a graph (nor pay for it)."""
    modes = []
    trunk.language_model.lm_head.register_forward_hook(
        lambda *_: modes.append(torch.is_inference_mode_enabled())
    )
    with torch.enable_grad():
        result = generate(
            trunk, tokenizer, PROMPT, fast, 0, packing, controller=Script([VISION_START, IM_END], [PLAN_1])
        )
    assert result.stop_reason == "stop_token" and modes and all(modes)
    assert not torch.is_inference_mode_enabled()


@pytest.mark.parametrize(("drops", "cfg_passes"), [("prompt", 2 + 5), ("text", 1 + 3)])
def test_costs_count_steps_and_every_forward_pass(trunk, tokenizer, packing, drops, cfg_passes):
    # 5 timesteps, no shift: Euler at t = 1, .75, .5, .25; guidance only on (0.8, 1], i.e. at t = 1.
    config = GenerationConfig.from_name(
        "tiny", num_timesteps=5, timestep_shift=1.0, cfg_interval=(0.8, 1.0), cfg_text_drops=drops
    )
    result = generate(trunk, tokenizer, PROMPT, config, 0, packing, controller=refine_script())
    costs = result.costs
    assert (costs.images, costs.sampling_steps, costs.text_tokens) == (2, 10, 0)  # all text was forced
    # Conditional context: prompt, plan, 4 queries, VAE copy, ViT copy, critique, plan, 4 queries, VAE copy.
    # Text-unconditional, fed lazily before its queries. Without the prompt: plan + 1 query at the first
    # image; VAE, ViT, critique, plan + 1 query at the second. Without any text: 1 query; VAE, ViT, 1 query.
    assert costs.cfg_passes == cfg_passes
    assert costs.forward_passes == 15 + costs.cfg_passes
    assert costs.wall_time_s > 0


def test_guidance_off_costs_one_pass_per_step(trunk, tokenizer, fast, packing):
    config = dataclasses.replace(fast, cfg_text_scale=1.0, mode="single_pass")
    costs = generate(trunk, tokenizer, PROMPT, config, 0, packing).costs
    assert (costs.forward_passes, costs.cfg_passes, costs.sampling_steps) == (1 + 4, 0, 5)


def test_image_guidance_needs_an_image_in_the_context(trunk, tokenizer, fast, packing):
    """Before the first image the image-unconditional context equals the conditional one: no extra pass.
    An input image to edit is left out of it from the start."""
    config = dataclasses.replace(fast, cfg_text_scale=1.0, cfg_img_scale=2.0, cfg_interval=(0.0, 1.0))
    result = generate(trunk, tokenizer, PROMPT, config, 0, packing, controller=refine_script())
    # Second image only: prompt, plan, critique, plan (the images are left out) + 4 queries.
    assert result.costs.cfg_passes == 4 + 4
    edit = generate(
        trunk, tokenizer, PROMPT, config, 0, packing, controller=refine_script(), input_image=picture(64, 64)
    )
    # First image: prompt, plan + 4 queries; second: critique, plan + 4 queries.
    assert edit.costs.cfg_passes == 6 + 6
    assert edit.trajectory.input_image is not None and len(edit.images) == 2


# ---- errors ---------------------------------------------------------------------------------------------


def test_bad_inputs_are_named(trunk, tokenizer, fast, packing):
    with pytest.raises(ValueError, match="tag-like string '<ins>'"):
        generate(trunk, tokenizer, "draw <ins>", fast, 0, packing)
    with pytest.raises(ValueError, match=r"image_size=\(60, 64\)"):
        generate(trunk, tokenizer, PROMPT, dataclasses.replace(fast, image_size=(60, 64)), 0, packing)
    with pytest.raises(ValueError, match="max_latent_size=64 \\(trunk: 16\\)"):
        generate(trunk, tokenizer, PROMPT, fast, 0, PackingConfig())
    with pytest.raises(ValueError, match="chose '<\\|im_end\\|>' after text"):
        generate(trunk, tokenizer, PROMPT, fast, 0, packing, controller=Script([IM_END], [PLAN_1]))
