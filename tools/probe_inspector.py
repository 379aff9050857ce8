"""Does the inspector see what is wrong, and does the model choose to inspect when something is? Held-out
conflict and alignment samples, teacher-forced.

The loop lets the model choose, after every image, between a plan (``<ins>``) and an inspection, so
free-running trajectories show only the inspections the model chose, and how often it errs there says little
about the inspector. This tool asks both questions on samples whose answers are known, built as the recipe's
reasoning subsets build their validation sets (symbolic conflicts: a plan that contradicts the prompt;
alignment: an image that does not follow its plan; positives of both). Each sample is packed as training lays
it out, and at its inspection the checkpoint predicts, from the true text before it:

- **inspects**: at the inspection's first token, whether the model prefers starting an inspection to starting
  a plan. A sample's inspected step is where its trajectory shows an inspection, so a model that reads the
  flaw inspects the negatives; the positives are steps that training shows inspected only now and then.
- **verdict right**: at the verdict's first word, after the evidence ("... So the image follows" / "does not
  follow"; "... So the step is consistent" / "conflicts"), whether the model prefers the sample's own, given
  the true evidence before it. Given that it inspects, this is whether its inspection would agree with the
  world.

    python tools/probe_inspector.py runs/full/version_0/checkpoints/last.ckpt data/base/tokenizer
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from pdgen.data.alignment import AlignmentSpec, alignment_samples
from pdgen.data.conflict import ConflictSpec, conflict_samples
from pdgen.data.packing import PackingConfig, TrajectoryPacker
from pdgen.data.tokenizer import load_tokenizer
from pdgen.eval.teacher_forcing import text_logits
from pdgen.judges.step import STEP_VERDICT
from pdgen.judges.world import IMAGE_VERDICT
from pdgen.lit.module import ProcessDrivenModule
from pdgen.trajectory import Inspect, Trajectory

PLAN_OPENER = "<ins>"
VERDICT_MARKERS = (STEP_VERDICT, IMAGE_VERDICT)


@dataclass(frozen=True)
class InspectionTokens:
    """What a subset's inspections look like to the tokenizer: the tokens they open with, and the tokens
    their verdicts start with, positive and negative (the word after the judges' verdict marker)."""

    openers: tuple[int, ...]
    positive: tuple[int, ...]
    negative: tuple[int, ...]


def labelled(samples: Iterable) -> list[tuple[Trajectory, bool]]:
    """(trajectory, is a negative) of conflict or alignment samples."""
    return [(sample.trajectory, sample.label == "negative") for sample in samples]


def inspection(trajectory: Trajectory) -> Inspect:
    return next(step for step in trajectory.steps if isinstance(step, Inspect))


def verdict_position(tokenizer: Any, text: str) -> int:
    """Index, among the text's tokens, of the verdict's first word: the token after the verdict marker."""
    marker = next((m for m in VERDICT_MARKERS if m in text), None)
    if marker is None:
        raise ValueError(f"no verdict marker ({' / '.join(VERDICT_MARKERS)}) in {text!r}")
    before = tokenizer(text[: text.index(marker) + len(marker)])["input_ids"]
    if tokenizer(text)["input_ids"][: len(before)] != before:
        raise ValueError(f"the tokenizer merges the verdict marker with the word after it in {text!r}")
    return len(before)


def inspection_tokens(tokenizer: Any, samples: list[tuple[Trajectory, bool]]) -> InspectionTokens:
    """The openers, and the verdict tokens of positives and negatives, which must be apart."""
    openers, verdicts = set(), {False: set(), True: set()}
    for trajectory, negative in samples:
        text = inspection(trajectory).text
        ids = tokenizer(text)["input_ids"]
        openers.add(ids[0])
        verdicts[negative].add(ids[verdict_position(tokenizer, text)])
    if verdicts[False] & verdicts[True]:
        raise ValueError("positive and negative verdicts start with the same token: no verdict token")
    return InspectionTokens(tuple(sorted(openers)), *(tuple(sorted(verdicts[n])) for n in (False, True)))


def inspection_logits(
    module: ProcessDrivenModule, packer: TrajectoryPacker, trajectory: Trajectory
) -> torch.Tensor:
    """(L, V) logits predicting the tokens of the trajectory's inspection text, teacher-forced."""
    # The texts are the prompt, then the trajectory's plan and inspect segments in order.
    roles = ["prompt"] + [seg.role for seg in trajectory.segments() if seg.role in ("plan", "inspect")]
    for role, (_, logits) in zip(roles, text_logits(module, packer, trajectory), strict=True):
        if role == "inspect":
            return logits
    raise ValueError(f"{trajectory.prompt!r}: the trajectory has no inspection")


def judged(
    logits: torch.Tensor, tokens: InspectionTokens, plan_token: int, negative: bool, position: int
) -> tuple[bool, bool]:
    """(inspects, verdict right) from the (L, V) logits of one inspection, its verdict at `position` (see the
    module docstring)."""
    inspects = bool(logits[0, list(tokens.openers)].max() > logits[0, plan_token])
    row = logits[position]
    says_negative = bool(row[list(tokens.negative)].max() > row[list(tokens.positive)].max())
    return inspects, says_negative == negative


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("ckpt", help="a `pdgen fit` checkpoint of the process")
    parser.add_argument("tokenizer", help="the tokenizer directory it was trained with")
    parser.add_argument("--samples", type=int, default=64, help="samples a subset")
    parser.add_argument(
        "--split",
        default="val",
        choices=("val", "train"),
        help="held-out samples, or the first training ones (right on these alone: learned by heart)",
    )
    parser.add_argument(
        "--negative_fraction",
        type=float,
        default=ConflictSpec.negative_fraction,
        help="the conflict build's share of negatives; with --split train, configs/full.yaml's 0.3",
    )
    parser.add_argument("--world", default="default", help="the world preset the checkpoint was trained on")
    parser.add_argument("--packing", default="embedded", help="the packing preset it was trained with")
    args = parser.parse_args()
    torch.set_num_threads(1)
    module = ProcessDrivenModule.load_for_sampling(args.ckpt)
    packing = PackingConfig.from_name(args.packing).for_trunk(module.trunk.config)
    packer = TrajectoryPacker(load_tokenizer(args.tokenizer), packing)
    tokenizer = packer.tokenizer
    plan_token = tokenizer(PLAN_OPENER)["input_ids"][0]
    # (num_samples, val_size): the train split's first samples are a full build's, sample i being (seed, i)'s.
    sizes = (args.samples, args.samples) if args.split == "train" else (1, args.samples)
    subsets = {
        "conflict": labelled(
            conflict_samples(
                ConflictSpec(*sizes, world=args.world, negative_fraction=args.negative_fraction), args.split
            )
        ),
        "alignment": labelled(alignment_samples(AlignmentSpec(*sizes, world=args.world), args.split)),
    }
    print(f"{'subset':<11}{'label':<10}{'inspects':>9}{'verdict right':>15}{'n':>5}")
    for name, samples in subsets.items():
        tokens = inspection_tokens(tokenizer, samples)
        inspects, right, seen = Counter(), Counter(), Counter()
        for trajectory, negative in samples:
            logits = inspection_logits(module, packer, trajectory)
            position = verdict_position(tokenizer, inspection(trajectory).text)
            chose, agrees = judged(logits, tokens, plan_token, negative, position)
            label = "negative" if negative else "positive"
            inspects[label] += chose
            right[label] += agrees
            seen[label] += 1
        for label, n in seen.items():
            print(f"{name:<11}{label:<10}{inspects[label] / n:>9.2f}{right[label] / n:>15.2f}{n:>5}")


if __name__ == "__main__":
    main()
