"""Fixtures of the training tests: deterministic world packs (`world_packs.py`), a tiny module on them."""

import pytest
import torch
import yaml
from world_packs import WorldPacks

from pdgen.lit import ProcessDrivenModule


@pytest.fixture(scope="session")
def world_packs() -> WorldPacks:
    return WorldPacks(num_packs=2, samples_per_pack=2)


@pytest.fixture
def make_module(world_packs):
    """`make_module(**kwargs)`: the embedded trunk with its heads, seeded."""

    def build(**kwargs) -> ProcessDrivenModule:
        torch.manual_seed(0)
        vision_start = world_packs.tokenizer.convert_tokens_to_ids("<|vision_start|>")
        return ProcessDrivenModule("embedded", vision_start_id=vision_start, **kwargs)

    return build


@pytest.fixture
def every_step_config(tmp_path):
    """A `-c` file for `pdgen fit`: EMA, a `last.ckpt` saved after every step, and the divergence guard."""
    callbacks = [
        {"class_path": "pdgen.lit.EMA", "init_args": {"decay": 0.9}},
        {
            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
            "init_args": {"save_last": True, "every_n_train_steps": 1},
        },
        {"class_path": "pdgen.lit.DivergenceGuard"},
    ]
    path = tmp_path / "every_step.yaml"
    path.write_text(yaml.safe_dump({"trainer": {"callbacks": callbacks}}))
    return path

