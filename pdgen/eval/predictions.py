"""pdgen's prediction folders, read back: each sample's final image, trajectory and costs.

`pdgen predict` writes GenEval's layout (`pdgen.eval.samples`) with pdgen's own files beside it, where
the official scorer does not look:

    <root>/00000/metadata.jsonl                         the prompt's metadata (GenEval row or {"prompt": ...})
    <root>/00000/samples/0000.png                       the final image of sample 0
    <root>/00000/trajectory/0000/trajectory.json        the trajectory of sample 0, when it is one
    <root>/00000/trajectory/0000/00.png, 01.png, ...    every image drawn, in order
    <root>/00000/trajectory/0000/generation.json        the generated text, stop reason, error, seed, mode
    <root>/00000/trajectory/0000/costs.json             `Costs.to_dict()` plus "seed" and "mode"
    <root>/summary.json                                 `pdgen.inference.costs.summarise` over all samples
    <root>/eval_shapes.json, eval_geneval.json          `pdgen eval`'s reports (`report_path`)
    <root>/trajectories.html                            `pdgen view html`'s page (`PAGE_NAME`)

`read_predictions` lists the samples; `cost_summary` gives the figures the eval commands print beside
the scores. Both accept a plain GenEval folder (no trajectories, no costs): the fields are then None.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pdgen.errors import UserError
from pdgen.eval.samples import PromptFolder, read_prompt_folders
from pdgen.trajectory import JSON_NAME

TRAJECTORY_DIR = "trajectory"
COSTS_NAME = "costs.json"
GENERATION_NAME = "generation.json"
SUMMARY_NAME = "summary.json"
PAGE_NAME = "trajectories.html"
"""The page `pdgen view html` writes into the folder it shows, unless told `--out`."""


def report_path(images: Path, benchmark: str) -> Path:
    """Where `pdgen eval <benchmark>` writes its JSON report unless told `--out`: beside the images it
    scored, where `pdgen view html` finds the verdicts."""
    return images / f"eval_{benchmark}.json"


COST_FIGURES = (
    ("images drawn", "mean_images"),
    ("sampling steps", "mean_sampling_steps"),
    ("forward passes", "mean_forward_passes"),
    ("text tokens", "mean_text_tokens"),
    ("wall time (s)", "mean_wall_time_s"),
)
"""(label, summary key) of the cost figures printed beside scores: means per generated sample."""


@dataclass(frozen=True)
class Prediction:
    """One sample of one prompt: `image` is the final image, `trajectory` the folder holding
    trajectory.json, `drawn` every image of the sample's folder in order, `generation` and `costs` its
    JSON records; each is None (or empty) when the folder does not have it. A single-pass sample, or an
    output that is not a valid trajectory, has no trajectory.json but keeps its images and text."""

    folder: PromptFolder
    sample: int
    image: Path | None
    trajectory: Path | None
    drawn: tuple[Path, ...]
    generation: dict[str, Any] | None
    costs: dict[str, Any] | None

    @property
    def index(self) -> int:
        """The prompt's number (its folder name)."""
        return int(self.folder.path.name)


def is_prediction_folder(root: str | Path) -> bool:
    """Whether `root` holds GenEval-layout prompt folders (`<digits>/metadata.jsonl`)."""
    root = Path(root)
    return root.is_dir() and any(
        sub.name.isdigit() and (sub / "metadata.jsonl").is_file() for sub in root.iterdir()
    )


def read_predictions(root: str | Path) -> list[Prediction]:
    """Every sample under `root`, by prompt then sample number.

    A sample exists when it has a final image or a trajectory folder; its number is the image's or the
    folder's name (`0003.png` and `trajectory/0003/` are sample 3).

    Raises:
        UserError: as `read_prompt_folders`, or for a costs.json or generation.json that is not a JSON
            object (naming it).
    """
    predictions = []
    for folder in read_prompt_folders(root, require_tag=False):
        images = {int(path.stem): path for path in folder.images}
        trajectories = {}
        if (folder.path / TRAJECTORY_DIR).is_dir():
            trajectories = {
                int(sub.name): sub for sub in (folder.path / TRAJECTORY_DIR).iterdir() if sub.name.isdigit()
            }
        for sample in sorted(images.keys() | trajectories.keys()):
            directory = trajectories.get(sample)
            predictions.append(
                Prediction(
                    folder=folder,
                    sample=sample,
                    image=images.get(sample),
                    trajectory=directory if directory and (directory / JSON_NAME).is_file() else None,
                    drawn=tuple(sorted(directory.glob("[0-9]*.png"))) if directory else (),
                    generation=_read_object(directory / GENERATION_NAME) if directory else None,
                    costs=_read_object(directory / COSTS_NAME) if directory else None,
                )
            )
    return predictions


def cost_summary(root: str | Path) -> dict[str, float] | None:
    """The cost summary of a prediction folder, or None when it records no costs.

    Computed from the samples' costs.json files when there are any (so an interrupted run still has
    one); otherwise read from summary.json.

    Raises:
        UserError: for a costs.json or summary.json that is not a JSON object (naming the file).
    """
    # Imported here: `pdgen.inference` imports torch, which reading folders and the viewer do not need.
    from pdgen.inference.costs import Costs, summarise

    fields = {field.name for field in dataclasses.fields(Costs)}
    costs = [
        Costs(**{key: value for key, value in prediction.costs.items() if key in fields})
        for prediction in read_predictions(root)
        if prediction.costs is not None
    ]
    if costs:
        return summarise(costs)
    summary_path = Path(root) / SUMMARY_NAME
    return _read_object(summary_path) if summary_path.is_file() else None


def _read_object(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise UserError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(value, dict):
        raise UserError(f"{path}: expected a JSON object, found {type(value).__name__}")
    return value
