"""Train pdgen's embedded tokenizer (a small byte-level BPE in Qwen2's format) offline, on the shapes world's
language or on text files.

``--world N`` builds the corpus from N shapes-world trajectories: ShapesEval training prompts, the
``<ins>``/``<des>`` texts of their plans (with the planner's edit augmentation) and the world judge's verdict
on every rendered step. With ``--text``, each non-empty line of each file is one document. The result is a
directory that `pdgen.data.tokenizer.load_tokenizer(DIR)` and `AutoTokenizer.from_pretrained(DIR)` both
load, with the control tokens at ids 0-5 (`<|endoftext|>`, `<|im_start|>`, `<|im_end|>`, `<|vision_start|>`,
`<|vision_end|>`, `<|image_pad|>`).

    python tools/train_tokenizer.py --world 2000 --out runs/tokenizer            # the embedded default
    python tools/train_tokenizer.py --text corpus.txt --out runs/tokenizer --vocab-size 1024
    some_command_printing_texts | python tools/train_tokenizer.py --text - --out runs/tokenizer

The vocabulary size must not exceed the trunk's `vocab_size` (1024 for the `tiny` preset).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

from pdgen.data.tokenizer import save_tokenizer, train_tokenizer


def read_documents(paths: list[str]) -> Iterator[str]:
    """The non-empty lines of each file (``-`` is standard input)."""
    for path in paths:
        if path == "-":
            text = sys.stdin.read()
        elif Path(path).is_file():
            text = Path(path).read_text(encoding="utf-8")
        else:
            raise SystemExit(f"train_tokenizer: --text {path!r} is not a file")
        yield from (line for line in text.splitlines() if line.strip())


def world_corpus(count: int, seed: int = 0) -> Iterator[str]:
    """The shapes world's language, from ``count`` trajectories (see the module docstring)."""
    from pdgen.judges.world import WorldJudge
    from pdgen.world.prompts import shapes_eval_prompts
    from pdgen.world.rollout import rollout

    judge = WorldJudge()
    prompts = [row["prompt"] for row in shapes_eval_prompts("train", seed=seed)]
    for i in range(count):
        prompt = prompts[i % len(prompts)]
        yield prompt
        for step in rollout(prompt, seed=seed + i, augment=0.3):
            # As packed segments write them: a plan, and an inspection (with its refine when wrong).
            yield f"<ins>{step.goal.ins}</ins><des>{step.goal.des}</des>"
            verdict = judge.check_image(step.image, step.goal)
            yield verdict.analysis + ("" if verdict.refine is None else f"<refine>{verdict.refine}</refine>")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--world", type=int, metavar="N", help="train on N shapes-world trajectories")
    source.add_argument("--text", nargs="+", help="files, one document a line (- = stdin)")
    parser.add_argument("--out", required=True, help="output directory (Hugging Face tokenizer files)")
    parser.add_argument("--vocab-size", type=int, default=1024, help="total tokens, control tokens included")
    parser.add_argument("--min-frequency", type=int, default=2, help="fewest occurrences of a merged pair")
    args = parser.parse_args(argv)

    corpus = world_corpus(args.world) if args.world is not None else read_documents(args.text)
    documents = [d for d in corpus if d.strip()]
    if not documents:
        raise SystemExit("train_tokenizer: the input holds no text")
    tokenizer = train_tokenizer(documents, vocab_size=args.vocab_size, min_frequency=args.min_frequency)
    out = save_tokenizer(tokenizer, args.out)
    tokens = sum(len(tokenizer.encode(d)) for d in documents)
    characters = sum(len(d) for d in documents)
    print(
        f"{len(tokenizer)} tokens, trained on {len(documents)} documents "
        f"({characters / tokens:.2f} characters per token) -> {out}"
    )


if __name__ == "__main__":
    main()
