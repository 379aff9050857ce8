"""Does the planner copy the prompt's objects, or recall the training prompts? Every object's plan,
teacher-forced, on ShapesEval's train and test prompts.

For every prompt of a split, one world rollout (no augmentation) is packed as the process lays it out, images
included, and the checkpoint predicts each token of every object's ``<ins>`` ("Add a red circle at the top
left.") from the true text before it. Only content words are scored, colours, classes and counts (places
follow from them in the default world, and are drawn at random in the others):

- in a world whose order is random (``large``, ``all``) either of two objects may come first, so when the
  planner starts with the other object's first word, the probe reads a rollout in which the world adds that
  object first instead; the default world builds a prompt in its own order, so only its first object is right;
- every content word must then be the true one: after "Add a red", the class the prompt gives red.

Two columns: the first object right, and every object right. The second is the plan a free-running planner
writes when it makes no mistake of its own; in the default world it is what `pdgen eval shapes` calls planned
right, without the errors that one plan's mistake leads to in the next. In a random-order world the later
objects may come in another order too, which one rollout cannot score, so there the column is left empty.

A planner that copies scores the same on both splits; one that recalls its training prompts scores higher on
``train`` (the test split shares no (tag, classes, colours) tuple with it). Teacher forcing scores each plan
from the true context, so it needs no image generation and takes seconds; `pdgen predict` + `pdgen eval
shapes` score whole free-running trajectories.

    python tools/probe_planner.py runs/full/version_0/checkpoints/last.ckpt data/base/tokenizer
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch

from pdgen.data.packing import PackingConfig, TrajectoryPacker
from pdgen.data.tokenizer import load_tokenizer
from pdgen.eval.teacher_forcing import text_logits
from pdgen.lit.module import ProcessDrivenModule
from pdgen.scene.vocabulary import COLORS, SHAPE_CLASSES
from pdgen.trajectory import Trajectory
from pdgen.world.config import WorldConfig
from pdgen.world.prompts import shapes_eval_prompts
from pdgen.world.rollout import rollout, trajectory_steps

PLURALS = tuple(f"{name}s" for name in SHAPE_CLASSES)
CONTENT_WORDS = frozenset((*COLORS, *SHAPE_CLASSES, *PLURALS, "two", "three", "four"))
"""What the probe scores: the words a plan copies from its prompt (places are the world's choice)."""
ORDERS = 16
"""Rollouts searched for one that adds first the object the planner started with."""


Words = tuple[list[str], list[str]]
"""The (true, predicted) content words of one ``<ins>``."""


def scored_plans(
    module: ProcessDrivenModule, packer: TrajectoryPacker, prompt: str, seed: int, world: WorldConfig
) -> list[Words]:
    """(true, predicted) content words of every object's ``<ins>`` of ``prompt``, teacher-forced.

    They are read on the world's rollout ``seed``; when the planner starts with another word than that
    rollout's first object, on the first of the next ``ORDERS`` rollouts that adds the object it started with
    first.
    """
    plans = plan_words(module, packer, world_trajectory(prompt, seed, world))
    if not plans or not plans[0][0]:
        raise ValueError(f"the first plan of {prompt!r} has no content word to score")
    for other in range(seed + 1, seed + 1 + ORDERS):
        targets, predictions = plans[0]
        if predictions[0] == targets[0]:
            break
        trajectory = world_trajectory(prompt, other, world)
        if content_words(trajectory.steps[2].ins)[:1] == predictions[:1]:
            plans = plan_words(module, packer, trajectory)
    return plans


def first_object_right(plans: list[Words]) -> bool:
    """Whether the planner wrote the first object's content words right."""
    targets, predictions = plans[0]
    return predictions == targets


def every_object_right(plans: list[Words]) -> bool:
    """Whether it wrote every object's content words right."""
    return all(predictions == targets for targets, predictions in plans)


def world_trajectory(prompt: str, seed: int, world: WorldConfig) -> Trajectory:
    """The world's rollout of ``prompt``, as a trajectory of plans and images."""
    return Trajectory(prompt, trajectory_steps(rollout(prompt, seed, world)))


def content_words(text: str) -> list[str]:
    """The content words of a plan's text, in order."""
    return [word for word in re.findall(r"[a-z]+", text) if word in CONTENT_WORDS]


def plan_words(module: ProcessDrivenModule, packer: TrajectoryPacker, trajectory: Trajectory) -> list[Words]:
    """(true, predicted) content words of each object's ``<ins>``, teacher-forced, in plan order."""
    # The texts are the prompt, the background's plan, then a plan an object.
    objects = text_logits(module, packer, trajectory)[2:]
    return [ins_words(packer.tokenizer, split.labels, logits.argmax(-1)) for split, logits in objects]


def ins_words(tokenizer: Any, labels: Sequence[Any], predicted: torch.Tensor) -> Words:
    """The (true, predicted) content words of the ``<ins>`` that ``labels`` begin with."""
    true_words, predicted_words = [], []
    for label, guess in zip(labels, predicted.tolist(), strict=True):
        word = tokenizer.decode([label.target]).strip()
        if "</" in word:  # the end of the <ins>: the <des> repeats what it says
            break
        if word in CONTENT_WORDS:
            true_words.append(word)
            predicted_words.append(tokenizer.decode([guess]).strip())
    return true_words, predicted_words


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("ckpt", help="a `pdgen fit` checkpoint of the process")
    parser.add_argument("tokenizer", help="the tokenizer directory it was trained with")
    parser.add_argument("--splits", nargs="+", default=["train", "test"], choices=["train", "test"])
    parser.add_argument("--per-tag", type=int, default=100, help="prompts per tag at most")
    parser.add_argument("--world", default="default", help="the world preset the checkpoint was trained on")
    parser.add_argument("--packing", default="embedded", help="the packing preset it was trained with")
    args = parser.parse_args()
    torch.set_num_threads(1)
    module = ProcessDrivenModule.load_for_sampling(args.ckpt)
    world = WorldConfig.from_name(args.world)
    packing = PackingConfig.from_name(args.packing).for_trunk(module.trunk.config)
    packer = TrajectoryPacker(load_tokenizer(args.tokenizer), packing)
    print(f"{'split':<7}{'tag':<15}{'first':>7}{'every':>7}{'n':>5}")
    for split in args.splits:
        first, every, seen = Counter(), Counter(), Counter()
        for seed, row in enumerate(shapes_eval_prompts(split, world, per_tag=args.per_tag)):
            plans = scored_plans(module, packer, row["prompt"], seed, world)
            first[row["tag"]] += first_object_right(plans)
            every[row["tag"]] += every_object_right(plans)
            seen[row["tag"]] += 1
        for tag, n in [*seen.items(), ("all prompts", seen.total())]:
            rates = [sum(c.values()) / n if tag == "all prompts" else c[tag] / n for c in (first, every)]
            every_rate = f"{rates[1]:>7.2f}" if not world.shuffles else f"{'-':>7}"
            print(f"{split:<7}{tag:<15}{rates[0]:>7.2f}{every_rate}{n:>5}")


if __name__ == "__main__":
    main()
