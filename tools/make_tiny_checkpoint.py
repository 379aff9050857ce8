"""Write a random BAGEL checkpoint in the release layout (default: the `tiny` preset).

    python tools/make_tiny_checkpoint.py --out /tmp/tiny-bagel [--preset tiny] [--seed 0]

The directory gets `llm_config.json`, `vit_config.json`, `pdgen_config.json`, `ema.safetensors` and
`ae.safetensors`; `BagelTrunk.from_pretrained(DIR)` loads it. Tokenizer files are not written here.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from pdgen.models.bagel import BagelConfig, BagelTrunk


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="checkpoint directory to write")
    parser.add_argument("--preset", default="tiny", help="config preset (default: tiny)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the initialisation")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    trunk = BagelTrunk(BagelConfig.from_name(args.preset))
    trunk.save_pretrained(args.out)
    params = sum(p.numel() for p in trunk.parameters())
    print(f"wrote {args.preset} checkpoint ({params:,} parameters) to {args.out}")


if __name__ == "__main__":
    main()
