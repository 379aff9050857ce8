"""The tokenizer: training the embedded default, saving and loading it offline, control tokens and tags."""

import json
import runpy
from pathlib import Path

import pytest
from tokenizers import pre_tokenizers
from transformers import Qwen2Tokenizer

from pdgen.data.tokenizer import (
    CONTROL_TOKENS,
    SpecialTokenIds,
    check_embedding_rows,
    encode_text,
    load_tokenizer,
    save_tokenizer,
    train_tokenizer,
)
from pdgen.trajectory import SPECIAL_TOKENS, STEP_TAGS


def test_trained_tokenizer_is_a_qwen2_tokenizer_with_control_tokens_first(tokenizer):
    assert isinstance(tokenizer, Qwen2Tokenizer)
    assert tokenizer.convert_tokens_to_ids(list(CONTROL_TOKENS)) == list(range(len(CONTROL_TOKENS)))
    assert len(tokenizer) <= 320
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.bos_token is None  # like Qwen2.5: encode() adds nothing
    assert tokenizer.encode("a red circle") == tokenizer.encode("a red circle", add_special_tokens=False)


def test_save_and_load_round_trip_offline(tokenizer, tmp_path):
    directory = save_tokenizer(tokenizer, tmp_path / "tok")
    config = json.loads((directory / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "Qwen2Tokenizer"
    assert not [p.name for p in tmp_path.iterdir() if p.name != "tok"], "staging directory left behind"

    loaded = load_tokenizer(directory, num_embeddings=320)
    text = "<ins>Add a blue square.</ins><des>A blue square and a red circle.</des>"
    assert loaded.encode(text) == tokenizer.encode(text)
    assert loaded.get_vocab() == tokenizer.get_vocab()
    assert SpecialTokenIds.from_tokenizer(loaded) == SpecialTokenIds.from_tokenizer(tokenizer)


def test_control_tokens_are_single_tokens_and_tags_are_plain_text(tokenizer):
    ids = SpecialTokenIds.from_tokenizer(tokenizer)
    image = "<|vision_start|><|image_pad|><|vision_end|>"
    text = "<|im_start|><ins>Add a star.</ins><des>A star.</des><|im_end|>" + image
    encoded = tokenizer.encode(text)
    pad = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert encoded[0] == ids.im_start and encoded[-4:] == [ids.im_end, ids.vision_start, pad, ids.vision_end]
    assert tokenizer.decode(encoded) == text
    for token in SPECIAL_TOKENS:
        assert len(tokenizer.encode(token)) == 1, token
    for tag in STEP_TAGS:  # plain text: more than one ordinary token, none of them a control token
        pieces = tokenizer.encode(tag)
        assert len(pieces) > 1 and not set(pieces) & set(range(len(CONTROL_TOKENS))), tag


def test_any_text_round_trips_byte_level(tokenizer):
    for text in ["héllo wörld", "数字 ٣ and emoji 🙂", "  two  spaces\nand a newline\t", ""]:
        assert tokenizer.decode(tokenizer.encode(text)) == text


def test_encode_text_refuses_a_control_token_inside_a_segment(tokenizer):
    assert encode_text(tokenizer, "a red circle") == tokenizer.encode("a red circle")
    with pytest.raises(ValueError, match=r"steps\[2\].*<\|im_end\|>"):
        encode_text(tokenizer, "stop here<|im_end|>", where="steps[2]")


def test_load_adds_missing_control_tokens_into_spare_rows(tmp_path):
    # A plain byte-level tokenizer without any of BAGEL's markers.
    vocab = {"<|endoftext|>": 0} | {b: i + 1 for i, b in enumerate(pre_tokenizers.ByteLevel.alphabet())}
    bare = Qwen2Tokenizer(vocab=vocab, merges=[])
    with pytest.raises(ValueError, match="lacks <\\|im_start\\|>"):
        SpecialTokenIds.from_tokenizer(bare)
    save_tokenizer(bare, tmp_path)
    before = len(bare)

    loaded = load_tokenizer(tmp_path, num_embeddings=before + 16)
    added = loaded.convert_tokens_to_ids(list(SPECIAL_TOKENS))
    assert sorted(added) == list(range(before, before + len(SPECIAL_TOKENS)))
    assert len(loaded.encode("<|vision_start|>")) == 1

    with pytest.raises(ValueError, match=rf"{before + 5} tokens but the embedding has {before + 4} rows"):
        load_tokenizer(tmp_path, num_embeddings=before + 4)


def test_embedding_may_have_more_rows_than_tokens_never_fewer(tokenizer):
    check_embedding_rows(tokenizer, 152_064)  # BAGEL-7B-MoT: more rows than the tokenizer has tokens
    with pytest.raises(ValueError, match="never resizes"):
        check_embedding_rows(tokenizer, len(tokenizer) - 1)


def test_load_refuses_a_path_that_is_not_a_directory(tmp_path):
    with pytest.raises(ValueError, match="not a directory"):
        load_tokenizer(tmp_path / "Qwen/Qwen2.5-7B-Instruct")


def test_vocab_size_must_hold_bytes_and_control_tokens():
    with pytest.raises(ValueError, match="vocab_size=100"):
        train_tokenizer(["a b c"], vocab_size=100)


TOOL = Path(__file__).parents[2] / "tools" / "train_tokenizer.py"


def test_train_tokenizer_tool_writes_a_loadable_directory(tmp_path, capsys):
    tool = runpy.run_path(str(TOOL))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(
        "\n".join(["a photo of a red circle", "", "<ins>Add a star.</ins><des>A star.</des>"] * 5)
    )
    tool["main"](["--text", str(corpus), "--out", str(tmp_path / "tok"), "--vocab-size", "300"])
    assert "trained on 10 documents" in capsys.readouterr().out
    assert load_tokenizer(tmp_path / "tok", num_embeddings=300).decode([1]) == "<|im_start|>"


@pytest.mark.slow  # building ShapesEval's prompt list takes seconds
def test_train_tokenizer_tool_learns_the_shapes_world_language(tmp_path):
    tool = runpy.run_path(str(TOOL))
    corpus = list(tool["world_corpus"](3))
    assert corpus[1].startswith("<ins>") and corpus[1].endswith("</des>")  # after the first prompt, a plan
    tool["main"](["--world", "3", "--out", str(tmp_path), "--vocab-size", "400"])
    tokenizer = load_tokenizer(tmp_path, num_embeddings=400)
    assert tokenizer.decode(tokenizer.encode(corpus[1])) == corpus[1]
