"""`PredictionWriter`: `pdgen predict`'s results on disk, in GenEval's layout, resumable.

    OUT/00000/metadata.jsonl                    the prompt's metadata (GenEval schema, or {"prompt": ...})
    OUT/00000/samples/0000.png                  the final image of sample 0: what GenEval's scorer reads
    OUT/00000/trajectory/0000/trajectory.json   the trajectory (`pdgen.trajectory`), when the output is one
    OUT/00000/trajectory/0000/00.png, 01.png …  every image drawn, in order; an edit's input image first
    OUT/00000/trajectory/0000/generation.json   prompt, tagged text, stop reason, error, seed, mode, driver
    OUT/00000/trajectory/0000/costs.json        `Costs.to_dict()` plus "seed" and "mode"
    OUT/summary.json                            `pdgen.inference.summarise` over every sample in OUT

Every file is written atomically, and a sample's ``samples/NNNN.png`` is written last: a sample is done
exactly when that file exists. A run into an existing OUT therefore skips the samples already done (it
checks that each prompt folder's metadata is the prompt set's, so a different prompt file is refused), and
an interrupted run resumes where it stopped; ``summary.json`` always covers every sample on disk.

An edit (a prompt with an input image) keeps its input beside what was drawn, numbered first as the
trajectory numbers it (``00.png``, the drawn images from ``01.png``), and ``generation.json`` names it
(``"input_image"``), so that the sample can be looked at, and scored, without the prompt file.

A sample whose generation drew no image (the text budget ran out first, or a random model) still gets a
``samples/NNNN.png``: a blank white image, so the scorer counts it as the failure it is instead of the
benchmark silently losing a prompt; ``generation.json`` says ``"final_image": null``. Single-pass samples
and outputs that are not valid trajectories have no ``trajectory.json`` (there is no trajectory), but keep
their images and text.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from PIL import Image

from pdgen.data.prompts import PromptsDataModule
from pdgen.eval.samples import write_prompt_folder
from pdgen.images import open_image
from pdgen.inference.costs import Costs, summarise
from pdgen.io import write_atomic
from pdgen.lit.predict import Prediction

SUMMARY = "summary.json"
COSTS = "costs.json"
GENERATION = "generation.json"


class PredictionWriter(BasePredictionWriter):
    def __init__(self, out_dir: str | os.PathLike[str] | None = None) -> None:
        """Write each prediction as it is made (see the module docstring for the layout).

        Args:
            out_dir: the output folder; None writes into the trainer's ``default_root_dir`` (where
                LightningCLI also saves the run's ``config.yaml``, a record of how the samples were made).
        """
        super().__init__(write_interval="batch")
        self.out_dir = None if out_dir is None else Path(out_dir)

    def output(self, trainer: Trainer) -> Path:
        """The folder predictions go to."""
        return self.out_dir if self.out_dir is not None else Path(trainer.default_root_dir)

    # ---- Lightning hooks -----------------------------------------------------------------------------

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Leave out the samples already in the output folder (runs after the data module's setup)."""
        data = trainer.datamodule
        if stage != "predict" or not isinstance(data, PromptsDataModule):
            return
        out = self.output(trainer)
        done = set()
        for record in data.records:
            folder = _prompt_folder(out, record.index)
            if not (folder / "metadata.jsonl").is_file():
                continue
            found = json.loads((folder / "metadata.jsonl").read_text(encoding="utf-8"))
            if found != record.metadata:
                raise ValueError(
                    f"{folder / 'metadata.jsonl'} holds {found}, but prompt {record.index} of {data.path} is "
                    f"{record.metadata}: {out} holds another prompt set; write to another folder"
                )
            samples = range(data.samples_per_prompt)
            done |= {(record.index, k) for k in samples if _sample_path(out, record.index, k).is_file()}
        data.skip(done)

    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: Prediction,
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self.write(self.output(trainer), prediction)

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        out = self.output(trainer)
        if out.is_dir():
            write_summary(out)

    # ---- writing -------------------------------------------------------------------------------------

    @staticmethod
    def write(out: Path, prediction: Prediction) -> Path:
        """Write one sample (metadata first, the final image last); returns its trajectory folder."""
        request, generation = prediction.request, prediction.generation
        folder = _prompt_folder(out, request.index)
        if not (folder / "metadata.jsonl").is_file():
            write_prompt_folder(out, request.index, request.metadata, [])
        steps = folder / "trajectory" / f"{request.sample:04d}"
        source = generation.trajectory.input_image if generation.trajectory is not None else None
        if request.image is not None and source is None:
            source = open_image(request.image).convert("RGB")
        first = 0 if source is None else 1  # the trajectory's numbering: the input image is 00.png
        if generation.trajectory is not None:
            generation.trajectory.save(steps)
        else:
            for i, image in enumerate(([source] if source is not None else []) + generation.images):
                write_atomic(steps / f"{i:02d}.png", _png(image))
        drawn = [f"{i:02d}.png" for i in range(first, first + len(generation.images))]
        document = {
            "prompt": generation.prompt,
            "text": generation.text,
            "stop_reason": generation.stop_reason,
            "error": generation.error,
            "seed": request.seed,
            "mode": prediction.mode,
            "controller": prediction.controller,
            "input_image": None if source is None else "00.png",
            "images": drawn,
            "final_image": drawn[-1] if drawn else None,
        }
        write_atomic(steps / GENERATION, _json(document))
        costs = {**generation.costs.to_dict(), "seed": request.seed, "mode": prediction.mode}
        write_atomic(steps / COSTS, _json(costs))
        final = generation.final_image
        if final is None:
            size = generation.images[0].size if generation.images else (64, 64)
            final = Image.new("RGB", size, "white")
        write_atomic(_sample_path(out, request.index, request.sample), _png(final))
        return steps


def write_summary(out: str | os.PathLike[str]) -> dict[str, float]:
    """Summarise every sample's costs.json under `out` into `out/summary.json`; returns the summary."""
    out = Path(out)
    costs = []
    for path in sorted(out.glob(f"[0-9]*/trajectory/[0-9]*/{COSTS}")):
        saved = json.loads(path.read_text(encoding="utf-8"))
        costs.append(Costs(**{k: v for k, v in saved.items() if k not in ("seed", "mode")}))
    if not costs:
        return {}
    summary = summarise(costs)
    write_atomic(out / SUMMARY, _json(summary))
    return summary


def _prompt_folder(out: Path, index: int) -> Path:
    return out / f"{index:05d}"


def _sample_path(out: Path, index: int, sample: int) -> Path:
    return _prompt_folder(out, index) / "samples" / f"{sample:04d}.png"


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _json(value: Any) -> bytes:
    return (json.dumps(value, ensure_ascii=False, indent=1) + "\n").encode("utf-8")
