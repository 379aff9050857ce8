"""Fixtures for the data tests: one small tokenizer trained on a corpus written here, and a small multi-turn
build (``built``), shared by the session."""

import pytest
from reading_kit import SMALL

from pdgen.data.datamodules import MultiTurnDataModule
from pdgen.data.tokenizer import train_tokenizer

CORPUS = [
    "<ins>Add a red circle in the center.</ins><des>A red circle sits in the center of a white canvas.</des>",
    "<ins>Add a blue square left of the circle.</ins><des>A blue square is left of a red circle.</des>",
    "The square is above the circle, not left of it.<refine>Move the square left of the circle.</refine>",
    "The image matches the instruction: one red circle, centered.",
    "a photo of two green triangles and a yellow star",
] * 8


@pytest.fixture(scope="session")
def tokenizer():
    """A byte-level BPE of 320 tokens in the same format as Qwen2's (about 0.1 s to train)."""
    return train_tokenizer(CORPUS, vocab_size=320)


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """A small multi-turn shard set: 6 training shards of 8 trajectories, one validation shard."""
    root = tmp_path_factory.mktemp("multiturn")
    MultiTurnDataModule(root, SMALL).prepare_data()
    return root
