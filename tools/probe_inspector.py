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
- **verdict right**: at the first token where a subset's positive and negative inspections part ("The image
  shows" / "Expected ..."; "The step is consistent" / "The step conflicts"), whether the model prefers the
  sample's own. Given that it inspects, this is whether its inspection would agree with the world.

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
from pdgen.lit.module import ProcessDrivenModule
from pdgen.trajectory import Inspect, Trajectory

PLAN_OPENER = "<ins>"


@dataclass(frozen=True)
class InspectionTokens:
    """What a subset's inspections look like to the tokenizer: the tokens they open with, and the position
    where positives and negatives part, with the tokens each has there."""

    openers: tuple[int, ...]
    position: int
    positive: tuple[int, ...]
    negative: tuple[int, ...]


def labelled(samples: Iterable) -> list[tuple[Trajectory, bool]]:
    """(trajectory, is a negative) of conflict or alignment samples."""
    return [(sample.trajectory, sample.label == "negative") for sample in samples]


def inspection(trajectory: Trajectory) -> Inspect:
    return next(step for step in trajectory.steps if isinstance(step, Inspect))


def inspection_tokens(tokenizer: Any, samples: list[tuple[Trajectory, bool]]) -> InspectionTokens:
    """The openers, and the first position where no positive has a token that a negative has."""
    texts = [(tokenizer(inspection(t).text)["input_ids"], negative) for t, negative in samples]
    openers = tuple(sorted({ids[0] for ids, _ in texts}))
    for position in range(min(len(ids) for ids, _ in texts)):
        positive, negative = ({ids[position] for ids, no in texts if no == label} for label in (False, True))
        if not positive & negative:
            return InspectionTokens(openers, position, tuple(sorted(positive)), tuple(sorted(negative)))
    raise ValueError("positive and negative inspections never part: no verdict token")


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
    logits: torch.Tensor, tokens: InspectionTokens, plan_token: int, negative: bool
) -> tuple[bool, bool]:
    """(inspects, verdict right) from the (L, V) logits of one inspection (see the module docstring)."""
    inspects = bool(logits[0, list(tokens.openers)].max() > logits[0, plan_token])
    row = logits[tokens.position]
    says_negative = bool(row[list(tokens.negative)].max() > row[list(tokens.positive)].max())
    return inspects, says_negative == negative


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("ckpt", help="a `pdgen fit` checkpoint of the process")
    parser.add_argument("tokenizer", help="the tokenizer directory it was trained with")
    parser.add_argument("--samples", type=int, default=64, help="held-out samples a subset")
    parser.add_argument("--world", default="default", help="the world preset the checkpoint was trained on")
    parser.add_argument("--packing", default="embedded", help="the packing preset it was trained with")
    args = parser.parse_args()
    torch.set_num_threads(1)
    module = ProcessDrivenModule.load_for_sampling(args.ckpt)
    packing = PackingConfig.from_name(args.packing).for_trunk(module.trunk.config)
    packer = TrajectoryPacker(load_tokenizer(args.tokenizer), packing)
    tokenizer = packer.tokenizer
    plan_token = tokenizer(PLAN_OPENER)["input_ids"][0]
    subsets = {
        "conflict": labelled(conflict_samples(ConflictSpec(1, args.samples, world=args.world), "val")),
        "alignment": labelled(alignment_samples(AlignmentSpec(1, args.samples, world=args.world), "val")),
    }
    print(f"{'subset':<11}{'label':<10}{'inspects':>9}{'verdict right':>15}{'n':>5}")
    for name, samples in subsets.items():
        tokens = inspection_tokens(tokenizer, samples)
        inspects, right, seen = Counter(), Counter(), Counter()
        for trajectory, negative in samples:
            logits = inspection_logits(module, packer, trajectory)
            chose, agrees = judged(logits, tokens, plan_token, negative)
            label = "negative" if negative else "positive"
            inspects[label] += chose
            right[label] += agrees
            seen[label] += 1
        for label, n in seen.items():
            print(f"{name:<11}{label:<10}{inspects[label] / n:>9.2f}{right[label] / n:>15.2f}{n:>5}")


if __name__ == "__main__":
    main()
