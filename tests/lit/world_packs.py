"""A deterministic in-memory data module for the training tests: shapes-world rollouts packed for the trunk.

Stands in for `pdgen.data.datamodules.MultiTurnDataModule` (shards, shuffling, workers) where a test needs
a fixed data order and no disk. Like it, the training stream is endless (train with `max_steps`) and its
position is in `state_dict`, so a resumed fit continues with the pack an uninterrupted fit would see next.
Importable as `world_packs` (pytest puts this folder on `sys.path`): CLI arguments can name
`world_packs.WorldPacks`.
"""

import itertools
from collections.abc import Iterator

from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, IterableDataset

from pdgen.data.packing import PackedBatch, PackingConfig, TrajectoryPacker
from pdgen.data.tokenizer import train_tokenizer
from pdgen.models.bagel import BagelConfig
from pdgen.trajectory import Inspect, Plan, Sketch, Trajectory
from pdgen.world.rollout import rollout

PROMPTS = [
    "a photo of a red circle left of a blue square",
    "a photo of a green triangle",
    "a photo of two yellow circles",
]

EMBEDDED = BagelConfig.from_name("embedded")


def world_trajectory(prompt: str, seed: int, image_size: int = 16, inspect: bool = True) -> Trajectory:
    """Plan/Sketch per rollout step; with `inspect`, an approving inspection after the first sketch."""
    steps = []
    for i, world_step in enumerate(rollout(prompt, seed)):
        image = world_step.image.resize((image_size, image_size))
        steps += [Plan(world_step.goal.ins, world_step.goal.des), Sketch(image)]
        if inspect and i == 0:
            steps.append(Inspect("The sketch matches the plan."))
    return Trajectory(prompt, steps)


def embedded_packing(image_size: int = 16) -> PackingConfig:
    """The embedded trunk's geometry at `image_size` px (16 px: 4 x 4 latent tokens, cheap packs)."""
    sizes = dict(vae_min_size=image_size, vae_max_size=image_size, vit_min_size=16, vit_max_size=32)
    return PackingConfig.for_model(EMBEDDED, **sizes)


class WorldPacks(LightningDataModule):
    def __init__(self, num_packs: int = 2, samples_per_pack: int = 2, image_size: int = 16) -> None:
        """Fixed packs of world trajectories, repeated in order.

        Args:
            num_packs: distinct packs in the cycle.
            samples_per_pack: trajectories in each pack.
            image_size: images are resized to this side (16 keeps the packs small).
        """
        super().__init__()
        trajectories = [
            world_trajectory(PROMPTS[i % len(PROMPTS)], seed=i, image_size=image_size)
            for i in range(num_packs * samples_per_pack)
        ]
        texts = [t.to_text() for t in trajectories]
        self.tokenizer = train_tokenizer(texts * 4, vocab_size=400)
        self.packing_config = embedded_packing(image_size)
        packer = TrajectoryPacker(self.tokenizer, self.packing_config)
        self.packs = [
            packer.collate([packer.sample(t) for t in trajectories[i : i + samples_per_pack]])
            for i in range(0, len(trajectories), samples_per_pack)
        ]
        self.packs_consumed = 0

    def train_dataloader(self) -> DataLoader:
        # batch_size=None: each item is already a whole step's batch.
        return DataLoader(_Cycle(self.packs, start=self.packs_consumed), batch_size=None, collate_fn=as_is)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.packs[:1], batch_size=None, collate_fn=as_is)

    def on_before_batch_transfer(self, batch: PackedBatch, dataloader_idx: int) -> PackedBatch:
        if self.trainer is not None and self.trainer.training:
            self.packs_consumed += 1
        return batch

    def state_dict(self) -> dict[str, int]:
        return {"packs_consumed": self.packs_consumed}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.packs_consumed = state_dict["packs_consumed"]


class _Cycle(IterableDataset):
    """The packs in order, round and round, from pack number `start`."""

    def __init__(self, packs: list[PackedBatch], start: int) -> None:
        self.packs, self.start = packs, start

    def __iter__(self) -> Iterator[PackedBatch]:
        for i in itertools.count(self.start):
            yield self.packs[i % len(self.packs)]


def as_is(pack: PackedBatch) -> PackedBatch:
    return pack


FROM_SCRATCH = ["--model.init_args.init_from", "null", "--model.init_args.init_from_config", "null"]
"""The recipe without its base stage: these tests train on world packs from random weights."""
IN_THIS_PROCESS = ["--trainer.strategy", "auto", "--trainer.devices", "1"]
"""The recipe on one rank: its two (configs/full.yaml) would start this test process again as the second."""


def fit_args(root, *extra) -> list[str]:
    """`pdgen fit` arguments: the shipped recipe on these world packs, quietly, writing under `root`."""
    return ["fit", "-c", "configs/full.yaml", *extra, "--data", "world_packs.WorldPacks",
            *FROM_SCRATCH, *IN_THIS_PROCESS, "--model.init_args.schedule.warmup_steps", "1",
            "--trainer.logger", "false",
            "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(root)]  # fmt: skip
