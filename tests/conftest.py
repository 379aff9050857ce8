"""Shared test fixtures, the one GPU gate (tests marked `gpu` skip without CUDA), the hypothesis profile."""

import os
import random

import pytest
import torch
from hypothesis import HealthCheck, settings

# Without a GPU the Triton kernels run under the interpreter. Triton reads the variable when a
# `@triton.jit` decorator runs and when it first configures itself, so it must be set before any test
# module imports triton, directly or through a library: this file is imported before all of them.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# The machine is two shared cores: a wall-clock deadline per example would fail tests at random.
settings.register_profile("pdgen", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("pdgen")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# Visits every ordered pair of split modes (causal c, full f, noise n) once: cc cf ff fn nn nc cn nf fc.
# fmt: off
EVERY_MODE_TRANSITION = [
    "causal", "causal", "full", "full", "noise", "noise", "causal", "noise", "full", "causal",
]
# fmt: on


@pytest.fixture
def random_pack():
    """Factory of random pack layouts for the attention tests: ``random_pack(seed, max_tokens)``.

    Returns ``(sample_lens, split_lens, split_modes)`` in a random sample order: a one-token sample, a
    sample that walks through every mode transition, and random samples up to ``max_tokens``; split
    lengths are drawn from 1..17 so boundaries rarely fall on tile edges.
    """

    def make(seed: int, max_tokens: int = 200) -> tuple[list[int], list[int], list[str]]:
        rng = random.Random(seed)

        def splits(modes):
            return [(rng.randint(1, 17), mode) for mode in modes]

        samples = [[(1, "causal")], splits(EVERY_MODE_TRANSITION)]
        budget = max_tokens - sum(n for sample in samples for n, _ in sample)
        while True:
            sample = splits(rng.choices(["causal", "full", "noise"], k=rng.randint(1, 5)))
            if sum(n for n, _ in sample) > budget:
                break
            samples.append(sample)
            budget -= sum(n for n, _ in sample)
        rng.shuffle(samples)
        sample_lens = [sum(n for n, _ in sample) for sample in samples]
        split_lens = [n for sample in samples for n, _ in sample]
        split_modes = [mode for sample in samples for _, mode in sample]
        return sample_lens, split_lens, split_modes

    return make


@pytest.fixture(autouse=True)
def _plain_argv(monkeypatch):
    """Tests call `pdgen.cli.main([...])` in-process; LightningCLI warns when pytest's own arguments
    are also in `sys.argv`, so every test sees the argv of a bare `pdgen`."""
    monkeypatch.setattr("sys.argv", ["pdgen"])
