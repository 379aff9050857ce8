"""Training throughput of a trunk preset on this machine: optimizer steps/s and tokens/s, packed vs. padded.

The same world trajectories are laid out two ways: *packed* (`TrajectoryPacker.collate`, samples end to end,
no padding) and *padded* (`collate_padded`, every sample right-padded to the longest, what a (B, L) batch
costs). Each step is the full `ProcessDrivenModule` step: flow times, trunk, three heads, backward, AdamW.
`useful tokens/s` counts only the tokens of the trajectories, which is what training progress is made of.

    python tools/bench_train.py --preset embedded --samples 8 --steps 5 --threads 2
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from pdgen.data.build import TOKENIZER_VOCAB, MultiTurnSpec, multiturn_trajectory
from pdgen.data.packing import PackingConfig, TrajectoryPacker
from pdgen.data.tokenizer import train_tokenizer
from pdgen.lit.module import ProcessDrivenModule, packing_for_trunk


def bench(module: ProcessDrivenModule, batch, steps: int) -> float:
    """Seconds per optimizer step (after one warm-up step)."""
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-3)
    for i in range(steps + 1):
        if i == 1:
            started = time.perf_counter()
        optimizer.zero_grad()
        module.total_loss(module.head_losses(copy.copy(batch)))[0].backward()
        optimizer.step()
    return (time.perf_counter() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="embedded", help="trunk preset")
    parser.add_argument("--samples", type=int, default=8, help="trajectories per step")
    parser.add_argument("--steps", type=int, default=5, help="timed steps")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    spec = MultiTurnSpec(num_trajectories=args.samples, val_size=0)
    trajectories = [multiturn_trajectory(spec, i) for i in range(args.samples)]
    tokenizer = train_tokenizer([t.to_text() for t in trajectories] * 8, vocab_size=TOKENIZER_VOCAB)
    torch.manual_seed(0)
    vision_start = tokenizer.convert_tokens_to_ids("<|vision_start|>")
    module = ProcessDrivenModule(args.preset, vision_start_id=vision_start)
    packing = packing_for_trunk(PackingConfig.from_name("tiny"), module.trunk.config)
    packer = TrajectoryPacker(tokenizer, packing)
    samples = [packer.sample(t) for t in trajectories]
    useful = sum(s.num_tokens for s in samples)
    print(f"preset {args.preset}, {args.samples} trajectories ({useful} tokens), {args.threads} threads")
    print(f"{'layout':<8}{'tokens':>8}{'steps/s':>10}{'tokens/s':>10}{'useful tokens/s':>17}")
    for name, batch in (("packed", packer.collate(samples)), ("padded", packer.collate_padded(samples))):
        seconds = bench(module, batch, args.steps)
        tokens = batch.sequence_length
        print(f"{name:<8}{tokens:>8}{1 / seconds:>10.2f}{tokens / seconds:>10.0f}{useful / seconds:>17.0f}")


if __name__ == "__main__":
    main()
