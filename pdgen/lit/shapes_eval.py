"""`ShapesEvalMonitor`: what the model draws, scored while it trains.

Losses say whether a model fits its data, not whether it draws what it is asked. At every validation this
callback generates a small fixed ShapesEval prompt set with the inference loop (`pdgen.inference.generate`,
the weights validation runs with: the EMA average when the `EMA` callback is on), scores the final images with
the world detector through the torchmetrics `GenEvalScore` and logs

- ``val/shapes/<tag>`` and ``val/shapes/overall``: GenEval's accuracy per tag and the mean of the tags;
- ``val/shapes/images``: one row per generation, every image it drew (the process's intermediate states
  too), the final one last, with what each generation wrote as ``val/shapes/text``.

The prompts are the first ``per_tag`` of each tag of the ShapesEval *test* split, sampled ``samples`` times
with seeds 0, 1, ...: the same set at every validation, so the curve is comparable step to step. Each figure
is a mean over ``per_tag x samples`` images: read it as a trend, not a result (`pdgen eval shapes` over the
whole test split is the result).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from lightning.pytorch import Callback, LightningModule, Trainer
from PIL import Image

from pdgen.lit.callbacks import strip


class ShapesEvalMonitor(Callback):
    def __init__(
        self,
        per_tag: int = 2,
        samples: int = 1,
        tags: list[str] | None = None,
        generation: str = "tiny",
        generation_overrides: dict[str, Any] | None = None,
        world: str = "default",
    ) -> None:
        """Score a fixed ShapesEval prompt set at every validation.

        Args:
            per_tag: prompts of each tag (the first of the test split's).
            samples: generations per prompt (seeds 0, 1, ...).
            tags: the tags to score; None scores all six.
            generation: `GenerationConfig` preset (the image size comes from the packing config).
            generation_overrides: fields of that preset to change, e.g. `{mode: single_pass}` for a model
                that draws in one pass (the base stage).
            world: the shapes world preset whose test split and detector are used.
        """
        from pdgen.scene.vocabulary import TAGS

        if per_tag < 1 or samples < 1:
            raise ValueError(f"ShapesEvalMonitor: per_tag={per_tag} and samples={samples} must be >= 1")
        unknown = sorted(set(tags or ()) - set(TAGS))
        if unknown:
            raise ValueError(f"ShapesEvalMonitor.tags: unknown {unknown}; tags are {list(TAGS)}")
        self.per_tag = per_tag
        self.samples = samples
        self.tags = list(tags or TAGS)
        self.generation = generation
        self.generation_overrides = dict(generation_overrides or {})
        self.world = world

    def prompts(self) -> list[dict[str, Any]]:
        """The GenEval metadata rows scored at every validation."""
        from pdgen.world.config import WorldConfig
        from pdgen.world.prompts import shapes_eval_prompts

        rows = shapes_eval_prompts("test", WorldConfig.from_name(self.world), per_tag=self.per_tag)
        return [row for row in rows if row["tag"] in self.tags]

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        if trainer.sanity_checking or getattr(datamodule, "tokenizer", None) is None:
            return
        scores, rows, text = self.score(pl_module, datamodule.tokenizer, datamodule.packing_config)
        for name, value in scores.items():
            pl_module.log(f"val/shapes/{name}", value, on_step=False, on_epoch=True, batch_size=1)
        experiment = getattr(trainer.logger, "experiment", None)
        if experiment is not None and hasattr(experiment, "add_image"):
            experiment.add_image(
                "val/shapes/images", np.asarray(strip(rows)), trainer.global_step, dataformats="HWC"
            )
            experiment.add_text("val/shapes/text", text, trainer.global_step)

    def score(
        self, pl_module: LightningModule, tokenizer: Any, packing: Any
    ) -> tuple[dict[str, float], list[list[Image.Image]], str]:
        """(scores by tag and ``overall``, image rows, markdown lines) of one pass over the prompt set."""
        from pdgen.eval.metric import GenEvalScore
        from pdgen.inference.config import GenerationConfig
        from pdgen.inference.loop import generate
        from pdgen.world.config import WorldConfig
        from pdgen.world.detect import WorldDetector

        side = packing.vae_max_size
        config = GenerationConfig.from_name(
            self.generation, **{"image_size": (side, side), **self.generation_overrides}
        )
        metric = GenEvalScore(WorldDetector(WorldConfig.from_name(self.world)))
        blank = Image.new("RGB", (side, side), "white")
        rows, lines = [], []
        was_training = pl_module.training
        pl_module.eval()
        try:
            for row in self.prompts():
                for seed in range(self.samples):
                    result = generate(pl_module.trunk, tokenizer, row["prompt"], config, seed, packing)
                    metric.update([result.final_image or blank], [row])
                    rows.append(result.images or [blank])
                    lines.append(
                        f"**{row['prompt']}** (seed {seed}, {result.stop_reason}, {len(result.images)} "
                        f"image(s)): `{result.text}`"
                    )
        finally:
            pl_module.train(was_training)
        scores = {name: float(value) for name, value in metric.compute().items()}
        return scores, rows, "\n\n".join(lines)
