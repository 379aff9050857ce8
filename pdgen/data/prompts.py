"""The prediction set of `pdgen predict`: prompts in, one `PredictRequest` per sample out, how to generate.

What is in this file, top to bottom:
- ``PromptRecord`` and ``read_prompts``: a prompt source as numbered records. A source is
  - a ``.txt`` file, one prompt per line (blank lines are skipped, line numbers still count);
  - a ``.jsonl`` file of objects with a ``"prompt"`` string and any other keys (GenEval's
    ``evaluation_metadata.jsonl``, a ShapesEval metadata file, or your own), kept as the metadata; an
    ``"image"`` key makes the prompt an edit request of that image (a path, relative to the file's folder;
    ShapesEdit's ``cases.jsonl``), which must exist and decode;
  - ``shapes:SPLIT`` or ``shapes:SPLIT:PER_TAG``: the built-in ShapesEval split (``pdgen.world.prompts``),
    e.g. ``shapes:test:4`` = four test prompts of each of GenEval's six tags, no file needed.
  A bad line raises ValueError naming the file and the line.
- ``sample_seed``: the seed of sample ``k`` of prompt ``i`` under a run seed: a function of
  ``(seed, i, k)`` alone, so any subset (a resumed run, one prompt) redraws exactly the same samples.
- ``PromptsDataModule``: the LightningDataModule ``pdgen predict`` reads.

Why the generation options live here and not on the model. With ``--ckpt_path``, LightningCLI reads the
checkpoint's saved hyperparameters and lets them win over the command line's ``--model.*`` arguments,
so a sampler option on the model could never be changed at predict time. The data module's arguments
are never overridden that way, and a prediction set is naturally "these prompts, this many samples, drawn
like this": so the module holds the `GenerationConfig` (a preset plus overrides, ``mode`` on its own for
the single-pass baseline), the controller (a training-free baseline or the interactive terminal), and the
tokenizer and packing config the model was trained with. ``ProcessDrivenModule.predict_step`` reads them
from ``trainer.datamodule`` (``pdgen.lit.predict``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
from torch.utils.data import DataLoader

from pdgen.data.packing_config import PackingConfig, PackingGeometry
from pdgen.inference.config import GenerationConfig, Mode
from pdgen.inference.control import Controller, ModelDecides
from pdgen.trajectory import TAG_PATTERN

SHAPES_SOURCE = "shapes:"
"""Prefix of a built-in ShapesEval split as a prompt source."""

Baseline = Literal["planner", "inspector"]


@dataclass(frozen=True)
class PromptRecord:
    """One prompt of a source: its position, its text, its metadata (GenEval schema when it has one) and the
    image it asks to edit (None: draw from nothing)."""

    index: int
    prompt: str
    metadata: dict[str, Any]
    image: Path | None = None


@dataclass
class PredictRequest:
    """One sample to generate: a batch of `pdgen predict` (a plain dataclass: Lightning moves batches with
    ``apply_to_collection``, which refuses frozen ones)."""

    index: int
    sample: int
    prompt: str
    metadata: dict[str, Any]
    seed: int
    image: Path | None = None


def sample_seed(seed: int, index: int, sample: int) -> int:
    """The seed of sample `sample` of prompt `index` in a run seeded with `seed` (63 bits, well mixed)."""
    state = np.random.SeedSequence([seed, index, sample]).generate_state(1, np.uint64)[0]
    return int(state) >> 1


def read_prompts(source: str | os.PathLike[str]) -> list[PromptRecord]:
    """The prompts of `source` (a .txt, a .jsonl or ``shapes:SPLIT[:PER_TAG]``; module docstring), in order.

    Raises:
        ValueError: the file is missing or of another kind, or a line is not a usable prompt (named by file
            and line number).
    """
    text = str(source)
    if text.startswith(SHAPES_SOURCE):
        return _shapes_prompts(text)
    path = Path(source)
    if not path.is_file():
        raise ValueError(f"prompt file {path} does not exist")
    if path.suffix not in (".txt", ".jsonl"):
        raise ValueError(
            f"prompt file {path}: expected a .txt (one prompt per line) or a .jsonl (objects with a "
            f"'prompt'), or {SHAPES_SOURCE}SPLIT for the built-in ShapesEval prompts"
        )
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        image = None
        if path.suffix == ".txt":
            metadata: dict[str, Any] = {"prompt": line.strip()}
        else:
            metadata = _json_object(line, where)
            if "image" in metadata:
                image = _checked_image(metadata["image"], path.parent, where)
        prompt = _checked_prompt(metadata.get("prompt"), where)
        records.append(PromptRecord(len(records), prompt, metadata, image))
    if not records:
        raise ValueError(f"prompt file {path} holds no prompt")
    return records


def _json_object(line: str, where: str) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"{where}: not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected a JSON object with a 'prompt', got {type(value).__name__}")
    return value


def _checked_prompt(prompt: Any, where: str) -> str:
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"{where}: expected a non-empty 'prompt' string, got {prompt!r}")
    if tag := TAG_PATTERN.search(prompt):
        raise ValueError(
            f"{where}: the prompt contains the tag-like string {tag.group()!r}; prompts are plain text"
        )
    return prompt.strip()


def _checked_image(value: Any, folder: Path, where: str) -> Path:
    """The input image's path (relative to the prompt file's folder), checked to exist and decode."""
    from pdgen.images import UnreadableImage, open_image

    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: expected 'image' to be a path to the image to edit, got {value!r}")
    image = folder / value
    if not image.is_file():
        raise ValueError(f"{where}: the input image {image} does not exist")
    try:
        open_image(image)
    except UnreadableImage as error:
        raise ValueError(f"{where}: the input image cannot be read ({error.why})") from None
    return image


def _shapes_prompts(source: str) -> list[PromptRecord]:
    from pdgen.world.prompts import SPLITS, shapes_eval_prompts

    parts = source[len(SHAPES_SOURCE) :].split(":")
    usage = f"prompt source {source!r}: expected {SHAPES_SOURCE}SPLIT or {SHAPES_SOURCE}SPLIT:PER_TAG"
    if len(parts) > 2 or parts[0] not in SPLITS:
        raise ValueError(f"{usage}, SPLIT one of {', '.join(SPLITS)}")
    per_tag = 50
    if len(parts) == 2:
        if not parts[1].isdigit() or int(parts[1]) < 1:
            raise ValueError(f"{usage}, PER_TAG a positive integer (got {parts[1]!r})")
        per_tag = int(parts[1])
    rows = shapes_eval_prompts(parts[0], per_tag=per_tag)
    return [PromptRecord(i, row["prompt"], row) for i, row in enumerate(rows)]


def _only(batch: list[PredictRequest]) -> PredictRequest:
    """A batch of one request is that request (``batch_size=1`` lets Lightning see the batch indices)."""
    return batch[0]


class PromptsDataModule(L.LightningDataModule):
    """Prompts to generate for, the seeds of their samples, and how to generate them (`pdgen predict`).

    The tokenizer is the one the model was trained with: ``tokenizer`` (a directory) if given, else the
    one saved with the training shard set at ``root`` (``configs/full.yaml`` names it, so
    ``-c configs/full.yaml`` brings it along). ``packing`` must be the training run's preset; its
    geometry is the trunk's (``geometry``, linked from ``model.trunk`` as in training).

    Args:
        path: the prompt source: a .txt, a .jsonl (GenEval / ShapesEval metadata) or
            ``shapes:SPLIT[:PER_TAG]``.
        samples_per_prompt: samples drawn per prompt (GenEval draws 4).
        min_images_per_tag: draw more samples of the prompts of a GenEval tag that has few prompts, so that
            every tag is scored on at least this many images (ShapesEval's test split has 1-2 single-object
            prompts: 20 samples each give 40 images); None draws ``samples_per_prompt`` of every prompt.
        seed: the run seed; sample k of prompt i is seeded with ``sample_seed(seed, i, k)``.
        limit: only the first `limit` prompts.
        root: the training shard set whose saved tokenizer to use.
        tokenizer: a tokenizer directory; wins over `root`.
        packing: the ``PackingConfig`` preset of the training run (``tiny`` or ``bagel-7b-mot``).
        generation: the ``GenerationConfig`` preset (``tiny`` or ``bagel-7b-mot``).
        mode: ``process`` (plan, sketch, inspect, refine) or ``single_pass`` (one image, no reasoning).
        generation_overrides: other ``GenerationConfig`` fields, e.g. ``{num_timesteps: 20}``; without an
            ``image_size``, images are drawn at the largest square the packing config allows.
        baseline: a training-free baseline of the paper's Table 4 with the shapes world as back end
            (``pdgen.inference.baselines``): ``planner`` writes every plan, the model only draws;
            ``inspector`` critiques the model's draft once and the model refines it.
        interactive: show each plan, image and inspection on the terminal and let the user accept,
            redirect or stop (``pdgen.inference.interactive``); reads standard input.
        world: the shapes world preset of the baselines' back ends.
        geometry: the trunk's image geometry, which replaces the packing preset's; ``pdgen predict`` links it
            from ``model.trunk``.
    """

    def __init__(
        self,
        path: str,
        samples_per_prompt: int = 1,
        min_images_per_tag: int | None = None,
        seed: int = 0,
        limit: int | None = None,
        root: str | os.PathLike[str] | None = None,
        tokenizer: str | os.PathLike[str] | None = None,
        packing: str = "tiny",
        generation: str = "tiny",
        mode: Mode = "process",
        generation_overrides: dict[str, Any] | None = None,
        baseline: Baseline | None = None,
        interactive: bool = False,
        world: str = "default",
        geometry: PackingGeometry | None = None,
    ) -> None:
        super().__init__()
        if samples_per_prompt < 1:
            raise ValueError(f"PromptsDataModule.samples_per_prompt={samples_per_prompt} must be >= 1")
        if limit is not None and limit < 1:
            raise ValueError(f"PromptsDataModule.limit={limit} must be >= 1 (or None for every prompt)")
        if baseline not in (None, "planner", "inspector"):
            raise ValueError(f"PromptsDataModule.baseline={baseline!r}; expected planner, inspector or None")
        if baseline is not None and interactive:
            raise ValueError("PromptsDataModule: choose a baseline or interactive, not both")
        if baseline is not None and mode == "single_pass":
            raise ValueError(f"PromptsDataModule: baseline={baseline!r} needs mode='process'")
        self.path = path
        self.samples_per_prompt = samples_per_prompt
        if min_images_per_tag is not None and min_images_per_tag < 1:
            raise ValueError(
                f"PromptsDataModule.min_images_per_tag={min_images_per_tag} must be >= 1 (or None)"
            )
        self.min_images_per_tag = min_images_per_tag
        self.seed = seed
        self.limit = limit
        self.root = None if root is None else Path(root)
        self.tokenizer_path = None if tokenizer is None else Path(tokenizer)
        self.packing_config = PackingConfig.from_name(packing).with_geometry(geometry)
        self.overrides = dict(generation_overrides or {})
        self.overrides["mode"] = mode
        # Built here so that a bad preset or field fails at start-up; `generation_config` sets the image size.
        self._generation = GenerationConfig.from_name(generation, **self.overrides)
        if baseline == "inspector" and self._generation.max_images < 2:
            raise ValueError(
                f"PromptsDataModule: baseline='inspector' draws a draft and its refinement, but max_images="
                f"{self._generation.max_images}"
            )
        self.baseline = baseline
        self.interactive = interactive
        self.world = world
        self.tokenizer: Any = None
        self.image_dir: Path | None = None  # where the interactive terminal saves the images it shows
        self.records: list[PromptRecord] = []
        self.requests: list[PredictRequest] = []

    # ---- how to generate ---------------------------------------------------------------------------------

    @property
    def generation_config(self) -> GenerationConfig:
        """The run's `GenerationConfig`; no image size given: the largest square the packing allows."""
        config = self._generation
        if "image_size" not in self.overrides:
            side = self.packing_config.vae_max_size
            config = dataclasses.replace(config, image_size=(side, side))
        if self.baseline == "planner":
            # Every plan follows an image directly, as in the multi-turn training data: no ViT copy for an
            # inspection that never comes.
            config = dataclasses.replace(config, inspect=False)
        return config

    def controller(self, request: PredictRequest) -> Controller:
        """A fresh controller for one sample (controllers keep per-generation state)."""
        if self.interactive:
            from pdgen.inference.interactive import Interactive

            return Interactive(sys.stdin, sys.stdout, self.image_dir)
        if self.baseline is None:
            return ModelDecides()
        from pdgen.inference import baselines
        from pdgen.judges.world import WorldJudge
        from pdgen.world.config import WorldConfig

        world = WorldConfig.from_name(self.world)
        if self.baseline == "planner":
            return baselines.ExternalPlanner(baselines.WorldPlanner(world).plan(request.prompt, request.seed))
        goal = baselines.prompt_goal(request.prompt)
        return baselines.ExternalInspector(WorldJudge(world), goal, self.generation_config.max_images)

    @property
    def controller_name(self) -> str:
        """What drives the loop besides the model, as recorded with each sample."""
        return "interactive" if self.interactive else self.baseline or "model"

    # ---- Lightning hooks ---------------------------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        """Read the prompts, make the requests and load the tokenizer."""
        from pdgen.data.tokenizer import load_tokenizer
        from pdgen.errors import UserError

        try:
            self.records = read_prompts(self.path)[: self.limit]
        except ValueError as error:  # a bad prompt file: a short message, not a traceback
            raise UserError(str(error)) from error
        self.requests = [
            PredictRequest(r.index, k, r.prompt, r.metadata, sample_seed(self.seed, r.index, k), r.image)
            for r in self.records
            for k in range(self.samples_of(r))
        ]
        self.tokenizer = load_tokenizer(self._tokenizer_dir())
        if self.interactive and self.image_dir is None:
            self.image_dir = Path(tempfile.mkdtemp(prefix="pdgen-interactive-"))

    def samples_of(self, record: PromptRecord) -> int:
        """How many samples of `record` to draw: ``samples_per_prompt``, or more where its tag is short of
        ``min_images_per_tag`` images."""
        tag = (record.metadata or {}).get("tag")
        if self.min_images_per_tag is None or tag is None:
            return self.samples_per_prompt
        prompts = sum((r.metadata or {}).get("tag") == tag for r in self.records)
        return max(self.samples_per_prompt, math.ceil(self.min_images_per_tag / prompts))

    def _tokenizer_dir(self) -> Path:
        if self.tokenizer_path is not None:
            return self.tokenizer_path
        if self.root is not None:
            from pdgen.data.shards import read_manifest

            manifest = read_manifest(self.root)
            if manifest is not None:
                return self.root / manifest["tokenizer"]
            raise ValueError(
                f"PromptsDataModule: no shard set in data.root={str(self.root)!r} (no manifest.json) to take "
                "the tokenizer from; pass data.tokenizer (the tokenizer directory the model was trained with)"
            )
        raise ValueError(
            "PromptsDataModule: no tokenizer: pass data.tokenizer (a tokenizer directory) or data.root (the "
            "training shard set, whose tokenizer/ the model was trained with)"
        )

    def skip(self, done: set[tuple[int, int]]) -> None:
        """Leave out the (prompt index, sample) pairs in `done` (a resumed run; `PredictionWriter`)."""
        self.requests = [r for r in self.requests if (r.index, r.sample) not in done]

    def predict_dataloader(self) -> DataLoader:
        """The requests one by one, in order, in the main process."""
        return DataLoader(self.requests, batch_size=1, collate_fn=_only, num_workers=0)
