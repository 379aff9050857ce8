"""Fixtures of the inference tests: a tokenizer trained here, a random tiny trunk, scripted trajectories."""

import pytest
import torch
from inference_testkit import CORPUS
from torch import nn

from pdgen.data.packing import PackingConfig
from pdgen.data.tokenizer import train_tokenizer
from pdgen.inference import GenerationConfig
from pdgen.models.bagel import BagelConfig, BagelTrunk
from pdgen.trajectory import IM_END


@pytest.fixture(scope="session")
def tokenizer():
    return train_tokenizer(CORPUS, vocab_size=320)


@pytest.fixture
def trunk() -> BagelTrunk:
    """A random tiny trunk whose velocity head is not zero (a fresh one draws the same image every time)."""
    torch.manual_seed(0)
    trunk = BagelTrunk(BagelConfig.from_name("tiny"))
    with torch.no_grad():
        trunk.llm2vae.weight.normal_(std=0.05)
    return trunk.eval()


@pytest.fixture
def talkative(trunk, tokenizer) -> BagelTrunk:
    """The trunk with a bias toward `<|im_end|>`, so that sampled text segments end after a few tokens
    (a random model would almost never close one)."""
    head = trunk.language_model.lm_head
    biased = nn.Linear(head.in_features, head.out_features, bias=True)
    with torch.no_grad():
        biased.weight.copy_(head.weight)
        biased.bias.zero_()
        biased.bias[tokenizer.convert_tokens_to_ids(IM_END)] = 4.5
    trunk.language_model.lm_head = biased
    return trunk


@pytest.fixture(scope="session")
def packing() -> PackingConfig:
    return PackingConfig.from_name("tiny")


@pytest.fixture
def fast() -> GenerationConfig:
    """The tiny preset with 5 timesteps: every code path, a fraction of a second per image."""
    return GenerationConfig.from_name("tiny", num_timesteps=5)


@pytest.fixture(autouse=True)
def _one_thread():
    """The loop runs many tiny forward passes; on a shared 2-core machine thread hand-offs cost ~10x the
    math, so these tests run single-threaded (and restore the setting after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
