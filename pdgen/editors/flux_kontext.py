"""`FluxKontextEditor`: a step's image from the one before and the step's instruction, the paper's editor.

The paper made its intermediate states with Flux-Kontext: the image so far and the plan's ``<ins>`` text in,
the next image out. This is that, behind the `Editor` protocol, on diffusers' ``FluxKontextPipeline`` loaded
from a local directory (``black-forest-labs/FLUX.1-Kontext-dev``, downloaded by you: nothing is fetched at run
time). Install the extra first: ``pip install 'pdgen[diffusers]'``.

- **Where it runs**: ``device`` and ``dtype`` (bfloat16 on a GPU), and ``offload``: ``model`` moves each
  component to the GPU only while it runs (about 24 GB of GPU memory instead of 40), ``sequential`` moves
  layer by layer (a few GB, many times slower).
- **Seeded per edit**: the noise of an edit is seeded from the editor's ``seed``, the instruction and the
  input image's pixels, so an edit does not depend on which edits came before it in the process or beside
  it in a batch: a build split across processes makes the same images as one process.
- **Batched**: ``edit_batch`` runs several edits in one pipeline call (one generator per edit).
- **The first step**: a plan opens with an empty background, and Kontext edits an image; the first image is
  the instruction applied to a blank canvas of ``size`` in ``canvas`` colour.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from PIL import Image

from pdgen.errors import UserError
from pdgen.scene.plan import StepGoal

Offload = Literal["none", "model", "sequential"]


def require_diffusers() -> Any:
    """The ``diffusers`` module, or an ImportError that names the extra to install."""
    try:
        import diffusers
    except ImportError as error:
        raise ImportError(
            "the Flux-Kontext editor needs diffusers: pip install 'pdgen[diffusers]' (diffusers, accelerate)"
        ) from error
    return diffusers


class FluxKontextEditor:
    """Flux-Kontext as an `Editor`: ``edit(image, before, goal)`` edits ``image`` by ``goal.ins``.

    Args:
        path: the local pipeline directory (``model_index.json`` and its components).
        device: where the pipeline runs (``cuda``, ``cuda:1``, ``cpu``).
        dtype: the weights' dtype: ``bfloat16``, ``float16`` or ``float32``.
        offload: ``none``, ``model`` (components to the GPU in turn) or ``sequential`` (layer by layer).
        num_inference_steps: flow steps per edit (28 is the release's default).
        guidance_scale: Flux's distilled guidance (2.5 for Kontext).
        size: side of the images made, in pixels (square; 1024 for the release).
        seed: seeds every edit, with its instruction and input pixels.
        canvas: colour of the blank canvas the first step edits.
        max_sequence_length: T5 tokens of the instruction (512 for the release).
        auto_resize: let the pipeline resize inputs to a resolution Kontext was trained at (the release);
            off for a pipeline of another size.
    """

    def __init__(
        self,
        path: str | Path,
        device: str = "cuda",
        dtype: str = "bfloat16",
        offload: Offload = "none",
        num_inference_steps: int = 28,
        guidance_scale: float = 2.5,
        size: int = 1024,
        seed: int = 0,
        canvas: str = "grey",
        max_sequence_length: int = 512,
        auto_resize: bool = True,
    ) -> None:
        import torch

        diffusers = require_diffusers()
        if not (Path(path) / "model_index.json").is_file():
            raise UserError(
                f"{path} is not a diffusers pipeline directory (no model_index.json); download "
                "black-forest-labs/FLUX.1-Kontext-dev there first (docs/data.md, 'Real images')"
            )
        if dtype not in ("bfloat16", "float16", "float32"):
            raise UserError(f"FluxKontextEditor.dtype must be bfloat16, float16 or float32, got {dtype!r}")
        if offload not in ("none", "model", "sequential"):
            raise UserError(f"FluxKontextEditor.offload must be none, model or sequential, got {offload!r}")
        self.pipeline = diffusers.FluxKontextPipeline.from_pretrained(str(path), dtype=getattr(torch, dtype))
        self.pipeline.set_progress_bar_config(disable=True)
        if offload == "model":
            self.pipeline.enable_model_cpu_offload(device=device)
        elif offload == "sequential":
            self.pipeline.enable_sequential_cpu_offload(device=device)
        else:
            self.pipeline.to(device)
        self.path = Path(path)
        self.device = device
        self.num_inference_steps = num_inference_steps
        self.guidance_scale = guidance_scale
        self.size = size
        self.seed = seed
        self.canvas = canvas
        self.max_sequence_length = max_sequence_length
        self.auto_resize = auto_resize

    def edit(self, image: Image.Image | None, before: Any, goal: StepGoal) -> Image.Image:
        """``image`` (None: a blank canvas) edited by ``goal.ins``; ``before`` is not needed."""
        return self.edit_batch([image], [goal])[0]

    def edit_batch(
        self, images: Sequence[Image.Image | None], goals: Sequence[StepGoal]
    ) -> list[Image.Image]:
        """Several edits in one pipeline call, each seeded on its own (see the module docstring)."""
        import torch

        if len(images) != len(goals):
            raise ValueError(f"edit_batch: {len(images)} images for {len(goals)} goals")
        inputs = [self._input(image) for image in images]
        generators = [
            torch.Generator("cpu").manual_seed(self.edit_seed(image, goal.ins))
            for image, goal in zip(inputs, goals, strict=True)
        ]
        result = self.pipeline(
            image=inputs,
            prompt=[goal.ins for goal in goals],
            height=self.size,
            width=self.size,
            max_area=self.size * self.size,
            num_inference_steps=self.num_inference_steps,
            guidance_scale=self.guidance_scale,
            generator=generators,
            max_sequence_length=self.max_sequence_length,
            _auto_resize=self.auto_resize,
        )
        return [image.convert("RGB") for image in result.images]

    def edit_seed(self, image: Image.Image, instruction: str) -> int:
        """The seed of one edit: a hash of the editor's seed, the instruction and the input's pixels."""
        digest = hashlib.sha256(f"{self.seed}\n{instruction}\n{image.size}".encode())
        digest.update(image.tobytes())
        return int.from_bytes(digest.digest()[:8], "big") >> 1

    def _input(self, image: Image.Image | None) -> Image.Image:
        if image is None:
            return Image.new("RGB", (self.size, self.size), self.canvas)
        return image.convert("RGB")
