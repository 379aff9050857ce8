"""Answer "will this checkpoint load?" without reading any tensor.

    python tools/inspect_checkpoint.py --preset bagel-7b-mot --json   # {key: shape} of a preset (meta device)
    python tools/inspect_checkpoint.py --dir /path/to/BAGEL-7B-MoT    # headers vs. the directory's config

`--preset` builds the trunk on the meta device and prints every state-dict key with its shape (the
autoencoder's keys under `vae.`, which live in `ae.safetensors` without that prefix). `--dir` reads the
directory's json configs and the safetensors headers only, prints the missing / unexpected /
mis-shaped keys, and exits with status 1 when there are any.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from pdgen.models.bagel import BagelConfig, BagelTrunk
from pdgen.models.bagel.checkpoint import CheckpointError, expected_shapes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--preset", help="print the keys and shapes of this config preset")
    what.add_argument("--dir", help="compare this checkpoint directory with its config")
    parser.add_argument("--json", action="store_true", help="with --preset: print one JSON object")
    args = parser.parse_args(argv)

    if args.preset:
        try:
            config = BagelConfig.from_name(args.preset)
        except ValueError as err:
            parser.error(str(err))
        with torch.device("meta"):
            shapes = expected_shapes(BagelTrunk(config))
        if args.json:
            print(json.dumps({key: list(shape) for key, shape in shapes.items()}, indent=1))
        else:
            for key, shape in shapes.items():
                print(f"{key}  {list(shape)}")
        return 0

    try:
        config, report = BagelTrunk.check_directory(args.dir)
    except (CheckpointError, ValueError) as err:
        print(err, file=sys.stderr)
        return 1
    print(report.format(f"{args.dir} vs. its config ({config.name!r})"))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
