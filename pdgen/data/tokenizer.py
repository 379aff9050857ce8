"""The tokenizer: Qwen2's, with BAGEL's four control tokens, loaded offline from a directory.

What is in this file, top to bottom:
- the control tokens (BAGEL's markers, named in ``pdgen.trajectory``, plus padding);
- ``SpecialTokenIds``: the ids packing and inference need, read from a tokenizer;
- ``load_tokenizer``: ``from_pretrained`` of a local directory (the BAGEL release's Qwen2 tokenizer files, or
  pdgen's own), adding a missing control token the way BAGEL does, into the embedding's spare rows;
- ``train_tokenizer`` / ``save_tokenizer``: the embedded default, a small byte-level BPE with Qwen2's
  pre-tokenizer trained offline on the shapes world's language, saved in the same Hugging Face format;
- ``encode_text``: text → ids for one packed segment, refusing text that smuggles in a control token.

Control tokens (BAGEL, ``data_utils.add_special_tokens``): every text segment is
``<|im_start|> text <|im_end|>`` and every image ``<|vision_start|> … <|vision_end|>``. Qwen2.5's tokenizer
already holds all four (ids 151644, 151645, 151652, 151653), so loading the release adds nothing.

pdgen's tags ``<ins> </ins> <des> </des> <refine> </refine>`` are **plain text**, not added tokens:

- LoRA and QLoRA, the fine-tuning paths most users of a 7B model take, freeze ``embed_tokens`` and
  ``lm_head``. An added tag would keep the untrained values of its spare embedding row, and the model could
  never learn to emit it. As text, a tag is a few ordinary tokens (``<ins`` ``>Add`` …) that Qwen2.5 already
  reads and writes fluently; HTML-like tags are everywhere in its pre-training data.
- No control flow depends on a tag being one token. The generator switches modality on ``<|vision_start|>``
  and stops on ``<|im_end|>`` right after ``<|vision_end|>``, both single tokens already; the tags are
  recovered from the decoded text by the strict trajectory parser.
- Packing assigns CE roles per *segment* (a plan segment, an inspect segment), so no label needs a token
  boundary at a tag.
- Nothing changes in the 152,064-row embedding matrix. (Trap, BAGEL issue #265: ``len(tokenizer)`` is
  151,665 for Qwen2.5, so resizing the embedding "to the tokenizer" would *shrink* it. pdgen never resizes;
  a token added at load time takes the next id, which is one of the spare rows, and ``load_tokenizer``
  refuses a tokenizer that would need more rows than the checkpoint has.)

The embedded tokenizer uses the same rule, so the tiny and 7B setups tokenize tags the same way.
Trap (transformers 5.x): ``Qwen2Tokenizer(vocab_file=..., merges_file=...)`` silently ignores both files
and drops ordinary text; build it from ``vocab=``/``merges=`` (as ``train_tokenizer`` does) or
``from_pretrained(dir)``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, Qwen2Tokenizer

from pdgen.trajectory import IM_END, IM_START, SPECIAL_TOKENS, VISION_END, VISION_START

ENDOFTEXT = "<|endoftext|>"
"""Qwen2's end-of-document token; pdgen pads with it."""
CONTROL_TOKENS: tuple[str, ...] = (ENDOFTEXT, *SPECIAL_TOKENS)
"""One token each in every pdgen tokenizer: BAGEL's four markers, ``<|image_pad|>``, the pad token."""

# Qwen2's pre-tokenizer split (a fact of the Qwen2 tokenizer.json): contractions, letter runs with one
# leading non-letter, single digits, punctuation runs, newlines, spaces.
QWEN2_PRETOKENIZE_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


@dataclass(frozen=True)
class SpecialTokenIds:
    """The token ids packing and generation need (BAGEL calls the first two bos and eos)."""

    im_start: int
    im_end: int
    vision_start: int
    vision_end: int
    pad: int

    @classmethod
    def from_tokenizer(cls, tokenizer: PreTrainedTokenizerBase) -> SpecialTokenIds:
        """Read the ids; ValueError if a control token is missing (``load_tokenizer`` adds them)."""
        vocab = tokenizer.get_vocab()
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else vocab.get(ENDOFTEXT)
        missing = [t for t in (IM_START, IM_END, VISION_START, VISION_END) if t not in vocab]
        if pad is None:
            missing.append("a pad token")
        if missing:
            raise ValueError(f"tokenizer {tokenizer.name_or_path!r} lacks {', '.join(missing)}")
        return cls(vocab[IM_START], vocab[IM_END], vocab[VISION_START], vocab[VISION_END], pad)


def check_embedding_rows(tokenizer: PreTrainedTokenizerBase, num_embeddings: int) -> None:
    """ValueError unless every token id of ``tokenizer`` has a row in an embedding of ``num_embeddings`` rows.

    The check is ``len(tokenizer) <= num_embeddings``, never equality: a checkpoint may (BAGEL-7B-MoT does)
    have more rows than tokens, and the spare rows are where added tokens go.
    """
    if len(tokenizer) > num_embeddings:
        raise ValueError(
            f"tokenizer {tokenizer.name_or_path!r} has {len(tokenizer)} tokens but the embedding has "
            f"{num_embeddings} rows; pdgen never resizes the checkpoint's embedding"
        )


def load_tokenizer(path: str | os.PathLike, num_embeddings: int | None = None) -> PreTrainedTokenizerBase:
    """Load a tokenizer from a local directory, offline, with every control token present.

    Args:
        path: a directory of Hugging Face tokenizer files (a BAGEL release, or ``save_tokenizer``'s output).
        num_embeddings: rows of the model's token embedding; when given, the tokenizer must fit in them.

    A control token the tokenizer lacks is added as a special token (as BAGEL's ``add_special_tokens`` does);
    it takes the next id, i.e. a spare row of the embedding. Qwen2.5's tokenizer has them all.
    """
    directory = Path(path)
    if not directory.is_dir():
        raise ValueError(f"tokenizer path {str(path)!r} is not a directory (pdgen loads tokenizers offline)")
    tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    vocab = tokenizer.get_vocab()
    missing = [t for t in SPECIAL_TOKENS if t not in vocab]
    if missing:
        tokenizer.add_tokens([AddedToken(t, special=True) for t in missing], special_tokens=True)
    if num_embeddings is not None:
        check_embedding_rows(tokenizer, num_embeddings)
    return tokenizer


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1024, min_frequency: int = 2) -> Qwen2Tokenizer:
    """Train the embedded default: a byte-level BPE with Qwen2's pre-tokenizer, as a ``Qwen2Tokenizer``.

    Args:
        texts: the corpus, one document per string (the shapes world's prompts, plans and critiques).
        vocab_size: total size including the 256 byte tokens and the ``CONTROL_TOKENS``, which take the first
            ids (``<|endoftext|>`` is 0); the trunk's embedding needs at least this many rows.
        min_frequency: a pair must occur this often to be merged.

    Every byte is in the base alphabet, so any text (any script) encodes and decodes losslessly.
    """
    controls = list(CONTROL_TOKENS)
    minimum = 256 + len(controls)
    if vocab_size < minimum:
        raise ValueError(
            f"vocab_size={vocab_size} is below {minimum} (256 bytes + {len(controls)} control tokens)"
        )
    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=controls,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer)
    vocab = bpe.get_vocab()
    # The tokenizers API exposes the learned merges (in rank order) only through the JSON form.
    merges = [tuple(pair) for pair in json.loads(bpe.to_str())["model"]["merges"]]
    assert all(vocab[t] == i for i, t in enumerate(controls)), "the trainer puts special tokens first"
    # Same class, special tokens and config values as Qwen2.5's own tokenizer_config.json.
    return Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        additional_special_tokens=list(SPECIAL_TOKENS),
    )


def save_tokenizer(tokenizer: PreTrainedTokenizerBase, out_dir: str | os.PathLike) -> Path:
    """Write ``tokenizer`` to ``out_dir`` in Hugging Face format; each file lands atomically.

    The files are written to a temporary sibling directory first and moved into place one by one, so a
    reader never sees a half-written ``tokenizer.json``.
    """
    target = Path(out_dir)
    target.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        tokenizer.save_pretrained(str(staging))
        for file in staging.iterdir():
            os.replace(file, target / file.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def encode_text(tokenizer: PreTrainedTokenizerBase, text: str, where: str = "text") -> list[int]:
    """Ids of ``text`` for one packed segment: no BOS/EOS added, and no control token allowed inside.

    Packing adds ``<|im_start|>``/``<|im_end|>`` itself; a control token *inside* the text (``"<|im_end|>"``
    typed into a prompt) would silently end the segment early, so it is a ValueError naming ``where``.
    The check is on the string: a tokenizer emits a control token exactly where its literal text appears.
    """
    smuggled = [token for token in CONTROL_TOKENS if token in text]
    if smuggled:
        raise ValueError(f"{where} contains control token(s) {smuggled}: {text[:80]!r}")
    return tokenizer.encode(text, add_special_tokens=False)


def content_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Ids of the tokens that *start* a content word of the shapes world: a class (singular or plural), a
    colour, a count, a relation or a place word, with and without a leading space.

    A plan is mostly template ("Add ", "The scene shows ", " on a grey background."), which a model learns
    first and which dominates its average CE; whether it copies the prompt's objects into the plan shows in
    the loss on these tokens alone (``PlannerHead``'s ``content_*`` metrics).
    """
    from pdgen.scene.vocabulary import COLORS, SHAPE_CLASSES

    words = [*SHAPE_CLASSES, *(f"{name}s" for name in SHAPE_CLASSES), *COLORS]
    words += ["two", "three", "four", "left", "right", "above", "below", "top", "bottom"]
    ids = {
        tokenizer.encode(prefix + word, add_special_tokens=False)[0] for word in words for prefix in ("", " ")
    }
    return sorted(ids)
