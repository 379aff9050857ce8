"""The paper's real-image multi-turn subset: an LLM parses, the planner orders, an image editor draws each
step, a judge checks it; on pluggable back ends, and split across processes by shard.

    prompt --Parser--> SceneGraph --plan--> [StepGoal...] --Editor, a step at a time--> images --Judge-->

The back ends are the protocols' (``pdgen.scene.parser.Parser``, ``pdgen.editors.base.Editor``,
``pdgen.judges.base.Judge``): for the paper's recipe ``OpenAIParser`` (GPT-4o), ``FluxKontextEditor`` and
``OpenAIJudge``; the template parser, the world judge or no judge plug in the same way. A sample that fails
is skipped and counted in the manifest by why (``FAILURES``): the parser gave no graph (``parser``: a refusal
or a reply that never validated), the planner found no plan (``planner``), the editor raised (``editor``),
the judge gave no verdict (``judge_error``) or rejected the plan or a step's image (``judge_disagrees``). The
shards are the same as every subset's (``pdgen.data.shards``); the manifest adds ``failures``.

**Split by shard.** Sample ``i`` is a function of ``(spec.seed, i)`` and the back ends alone (the Flux
editor seeds each edit from its input), and samples ``[k * samples_per_shard, (k + 1) * samples_per_shard)``
form shard ``k``. A build of ``num_shards`` processes hands shard ``k`` (train shards first, then validation
ones) to process ``k % num_shards``; each writes its shards under their numbers in the whole set, with a
record beside each (``.train-000003.json``: its samples and failures). A shard whose record exists is done:
a rerun (a job array's retry) skips it, so the build resumes. The process that finds every record written
merges them into ``manifest.json``; ``merge_real_build`` does it by hand. N processes make the shards of one.

Launch one process per GPU with any launcher; with ``torchrun`` the rank and world size come from its
environment (``RANK``, ``WORLD_SIZE``), with a job array from its index (docs/data.md, "Real images").
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pdgen.console import counter
from pdgen.data.shards import ShardSetWriter, SubsetStats, read_manifest, shard_name, write_manifest
from pdgen.data.subset_build import VAL_OFFSET
from pdgen.editors.base import Editor
from pdgen.errors import UserError
from pdgen.io import write_atomic
from pdgen.judges.base import Judge
from pdgen.judges.openai import ChatError
from pdgen.scene.parser import Parser
from pdgen.scene.plan import StepGoal, plan
from pdgen.trajectory import Plan, Sketch, Trajectory

log = logging.getLogger(__name__)

SUBSET = "multiturn-real"
"""The manifest's ``subset`` for this build."""
FAILURES = ("parser", "planner", "editor", "judge_error", "judge_disagrees")
"""Why a sample was skipped, as the manifest counts them."""


@dataclass(frozen=True)
class RealImageSpec:
    """What a real-image build is; the manifest records it, and every process of a split build must agree.

    Args:
        prompts: the prompts, in order; sample ``i`` takes prompt ``i % len(prompts)``.
        num_samples: training samples to attempt (failures are skipped, so fewer may be written).
        val_size: validation samples to attempt.
        seed: the data seed; sample ``i`` depends on ``(seed, i)`` (and the back ends) only.
        augment: the planner's probability of edit steps (recolour, replace, remove, move).
        samples_per_shard: samples attempted per shard: the unit of work a process takes.
        batch_size: samples whose steps go to the editor together.
        backends: what the back ends are (names, models, pipeline paths), recorded in the manifest.
    """

    prompts: tuple[str, ...]
    num_samples: int
    val_size: int = 0
    seed: int = 0
    augment: float = 0.0
    samples_per_shard: int = 100
    batch_size: int = 4
    backends: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "prompts", tuple(self.prompts))
        if not self.prompts:
            raise UserError("RealImageSpec.prompts is empty")
        if self.num_samples < 1 or self.val_size < 0 or self.samples_per_shard < 1 or self.batch_size < 1:
            raise UserError(
                "RealImageSpec needs num_samples >= 1, val_size >= 0, samples_per_shard >= 1 and batch_size "
                f">= 1; got {self.num_samples}, {self.val_size}, {self.samples_per_shard}, {self.batch_size}"
            )

    def shards(self) -> list[tuple[str, int, range]]:
        """Every shard of the build as (split, number, sample indexes), train shards first."""
        tasks = []
        for split, start, count in (("train", 0, self.num_samples), ("val", VAL_OFFSET, self.val_size)):
            for number, first in enumerate(range(0, count, self.samples_per_shard)):
                tasks.append(
                    (split, number, range(start + first, start + min(count, first + self.samples_per_shard)))
                )
        return tasks

    def to_dict(self) -> dict[str, Any]:
        """As the manifest records it: the prompts by their number and a hash of them."""
        digest = hashlib.sha256("\n".join(self.prompts).encode("utf-8")).hexdigest()
        return {**asdict(self), "prompts": {"count": len(self.prompts), "sha256": digest}}


@dataclass
class Backends:
    """The three back ends of a build; ``judge`` None keeps every sample the editor draws."""

    parser: Parser
    editor: Editor
    judge: Judge | None = None


class _Failed(Exception):
    def __init__(self, cause: str, why: str) -> None:
        self.cause = cause
        super().__init__(why)


@dataclass
class _Sample:
    """A sample in progress: its key, prompt, plan, the images so far."""

    key: str
    prompt: str
    goals: list[StepGoal]
    images: list[Image.Image] = field(default_factory=list)

    def trajectory(self) -> Trajectory:
        parts = [
            part
            for g, image in zip(self.goals, self.images, strict=True)
            for part in (Plan(g.ins, g.des), Sketch(image))
        ]
        return Trajectory(self.prompt, parts)


def _start(spec: RealImageSpec, backends: Backends, split: str, index: int) -> _Sample:
    """Parse and plan sample ``index`` (and have the judge check the plan), or ``_Failed``."""
    prompt = spec.prompts[index % len(spec.prompts)]
    key = f"{split}{index - (VAL_OFFSET if split == 'val' else 0):09d}"
    try:
        graph = backends.parser.parse(prompt)
    except (ChatError, ValueError) as error:
        raise _Failed("parser", str(error)) from error
    try:
        goals = plan(graph, np.random.default_rng([spec.seed, index]), augment=spec.augment)
    except ValueError as error:
        raise _Failed("planner", str(error)) from error
    if backends.judge is not None:
        _judged(backends.judge.check_plan, prompt, goals)
    return _Sample(key, prompt, goals)


def _judged(check: Any, *args: Any) -> None:
    try:
        verdict = check(*args)
    except ChatError as error:
        raise _Failed("judge_error", str(error)) from error
    if not verdict.ok:
        raise _Failed("judge_disagrees", verdict.analysis)


def _draw(samples: list[_Sample], backends: Backends, failures: Counter[str]) -> list[_Sample]:
    """Every step of ``samples`` drawn, step by step across the batch, each image judged; the samples that
    came through (the others counted in ``failures``)."""
    editor, alive = backends.editor, list(samples)
    for step in range(max((len(s.goals) for s in samples), default=0)):
        due = [s for s in alive if step < len(s.goals)]
        before = [s.images[-1] if s.images else None for s in due]
        goals = [s.goals[step] for s in due]
        try:
            if hasattr(editor, "edit_batch"):
                images = editor.edit_batch(before, goals)
            else:
                images = [editor.edit(image, None, goal) for image, goal in zip(before, goals, strict=True)]
        except Exception as error:  # noqa: BLE001 (any failure of the editor's pipeline skips its samples)
            log.warning("the editor failed on %s: %s", ", ".join(s.key for s in due), error)
            failures["editor"] += len(due)
            alive = [s for s in alive if s not in due]
            continue
        for sample, image in zip(due, images, strict=True):
            sample.images.append(image)
            if backends.judge is None:
                continue
            try:
                _judged(backends.judge.check_image, image, sample.goals[step])
            except _Failed as failed:
                log.info("skipped %s: %s (%s)", sample.key, failed.cause, failed)
                failures[failed.cause] += 1
                alive.remove(sample)
    return alive


def build_shard(
    root: Path, spec: RealImageSpec, backends: Backends, split: str, number: int, indexes: Sequence[int]
) -> dict[str, Any]:
    """Write one shard of the build (and its record); returns the record."""
    failures: Counter[str] = Counter()
    stats = SubsetStats()
    with ShardSetWriter(root, split, len(indexes), first_shard=number) as writer:
        for first in range(0, len(indexes), spec.batch_size):
            started = []
            for index in indexes[first : first + spec.batch_size]:
                try:
                    started.append(_start(spec, backends, split, index))
                except _Failed as failed:
                    log.info("skipped %s sample %d: %s (%s)", split, index, failed.cause, failed)
                    failures[failed.cause] += 1
            for sample in _draw(started, backends, failures):
                trajectory = sample.trajectory()
                writer.write(sample.key, trajectory)
                stats.add(trajectory)
    entry = writer.entry  # after the block: the last shard is finished when it ends
    record = {"split": split, "shard": number, "attempted": len(indexes), "entry": entry,
              "stats": asdict(stats), "failures": dict(failures)}  # fmt: skip
    write_atomic(_record_path(root, split, number), (json.dumps(record) + "\n").encode())
    return record


def build_real(
    root: str | os.PathLike[str],
    spec: RealImageSpec,
    backends: Backends,
    num_shards: int = 1,
    shard_index: int = 0,
    progress: bool = False,
) -> dict[str, Any] | None:
    """Build this process's shards of the real-image subset under ``root`` (see the module docstring).

    Returns:
        the merged manifest when every shard of the build is done (this process finished last), else None.

    Raises:
        ValueError: ``shard_index`` outside ``[0, num_shards)``, or ``root`` holds a build of another spec.
    """
    if not 0 <= shard_index < num_shards:
        raise UserError(f"--shard_index {shard_index} must be in [0, --num_shards {num_shards})")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    _check_spec(root, spec)
    mine = [task for number, task in enumerate(spec.shards()) if number % num_shards == shard_index]
    todo = [task for task in mine if not _record_path(root, task[0], task[1]).is_file()]
    if len(todo) < len(mine):
        log.warning(
            "resuming: %d of this process's %d shards in %s are done already",
            len(mine) - len(todo),
            len(mine),
            root,
        )
    bar = counter(
        sum(len(t[2]) for t in todo),
        f"building {SUBSET} shard part {shard_index + 1}/{num_shards}",
        "samples",
        progress,
    )
    for split, number, indexes in todo:
        record = build_shard(root, spec, backends, split, number, indexes)
        if record["entry"]["samples"] == 0 and record["failures"].get("editor") == len(indexes):
            raise RuntimeError(f"every edit of {shard_name(split, number)} failed: see the warnings above")
        bar.update(len(indexes))
    bar.close()
    return merge_real_build(root, spec) if _all_done(root, spec) else None


def merge_real_build(root: str | os.PathLike[str], spec: RealImageSpec) -> dict[str, Any]:
    """Merge every shard's record into ``manifest.json`` (the splits, Table 1's statistics, the failures).

    Raises:
        ValueError: a shard of the build has no record yet.
    """
    root = Path(root)
    missing = [shard_name(s, n) for s, n, _ in spec.shards() if not _record_path(root, s, n).is_file()]
    if missing:
        raise ValueError(f"{root}: {len(missing)} shard(s) not built yet, e.g. {missing[0]}")
    splits: dict[str, Any] = {}
    stats: dict[str, SubsetStats] = {}
    failures: Counter[str] = Counter()
    attempted = 0
    for split, number, _ in spec.shards():
        record = json.loads(_record_path(root, split, number).read_text())
        entry = splits.setdefault(split, {"shards": [], "samples": 0})
        entry["shards"] += record["entry"]["shards"]
        entry["samples"] += record["entry"]["samples"]
        total, part = stats.setdefault(split, SubsetStats()), SubsetStats(**record["stats"])
        total.samples += part.samples
        total.prompt_chars += part.prompt_chars
        total.prompt_words += part.prompt_words
        total.images += part.images
        total.max_images = max(total.max_images, part.max_images)
        failures.update(record["failures"])
        attempted += record["attempted"]
    manifest = {
        "subset": SUBSET,
        "spec": spec.to_dict(),
        "tokenizer": None,  # real-image data trains BAGEL-7B, which reads text with the release's tokenizer
        "splits": splits,
        "stats": stats.get("train", SubsetStats()).table(),
        "attempted": attempted,
        "failures": {cause: failures[cause] for cause in FAILURES},
    }
    write_manifest(root, manifest)
    return manifest


def _record_path(root: Path, split: str, number: int) -> Path:
    return root / f".{shard_name(split, number).removesuffix('.tar')}.json"


def _all_done(root: Path, spec: RealImageSpec) -> bool:
    return all(_record_path(root, s, n).is_file() for s, n, _ in spec.shards())


def _check_spec(root: Path, spec: RealImageSpec) -> None:
    """Every process of a build, and every rerun, must build the same spec: the first writes it down."""
    path = root / ".spec.json"
    mine = json.dumps(spec.to_dict(), sort_keys=True)
    if path.is_file():
        if path.read_text().strip() != mine:
            raise UserError(
                f"{root} holds a build of another spec ({path.read_text().strip()}), not {mine}: "
                "use another --out"
            )
        return
    if read_manifest(root) is not None:
        raise UserError(f"{root} already holds a shard set; choose another --out or delete it")
    write_atomic(path, (mine + "\n").encode())
