"""Fixtures of the trunk tests: the tiny config and trunk, and real packs built by `pdgen.data.packing`."""

import pytest
import torch
from bagel_testkit import CORPUS

from pdgen.data.packing import PackedBatch, PackedSample, PackingConfig, TextSplit, TrajectoryPacker
from pdgen.data.tokenizer import train_tokenizer
from pdgen.models.bagel import BagelConfig, BagelTrunk, sample_timesteps
from pdgen.trajectory import Trajectory


@pytest.fixture
def tiny_config() -> BagelConfig:
    return BagelConfig.from_name("tiny")


@pytest.fixture
def tiny_trunk(tiny_config) -> BagelTrunk:
    """A random tiny trunk with a non-zero velocity head and a generation expert that differs from the
    understanding expert (a fresh init copies one into the other, which would hide routing mistakes)."""
    torch.manual_seed(0)
    trunk = BagelTrunk(tiny_config)
    with torch.no_grad():
        for name, param in trunk.named_parameters():
            if "_moe_gen" in name or name.startswith("llm2vae"):
                param.add_(torch.randn_like(param) * 0.05)
    return trunk


@pytest.fixture(scope="session")
def packer() -> TrajectoryPacker:
    tokenizer = train_tokenizer(CORPUS, vocab_size=320)
    return TrajectoryPacker(tokenizer, PackingConfig.from_name("tiny"))


@pytest.fixture
def pack_of(packer):
    """`pack_of(trajectories)`: one collated pack with flow times sampled (seeded)."""

    def build(trajectories: list[Trajectory], seed: int = 0) -> PackedBatch:
        batch = packer.collate([packer.sample(t) for t in trajectories])
        batch.packed_timesteps = sample_timesteps(batch, generator=torch.Generator().manual_seed(seed))
        return batch

    return build


@pytest.fixture
def text_pack(packer):
    """`text_pack(*lengths)`: a pack of text-only samples (random ids), e.g. a prompt being prefilled."""

    def build(*lengths: int) -> PackedBatch:
        g = torch.Generator().manual_seed(0)
        samples = [
            PackedSample(
                (TextSplit(ids=tuple(torch.randint(10, 300, (n,), generator=g).tolist()), position=0),)
            )
            for n in lengths
        ]
        return packer.collate(samples)

    return build
