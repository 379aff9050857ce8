"""What the DataModule tests share: a small multi-turn build's options and a reader, and pack fingerprints."""

import dataclasses

import lightning as L

from pdgen.data.datamodules import MultiTurnDataModule
from pdgen.data.multiturn import MultiTurnSpec
from pdgen.data.packing import PackedBatch
from pdgen.data.reading import ReaderConfig

SMALL = MultiTurnSpec(num_trajectories=48, val_size=6, samples_per_shard=8)
READER = ReaderConfig(max_tokens=1024, shuffle_buffer=16, num_workers=0)
READER_FIELDS = {f.name for f in dataclasses.fields(ReaderConfig)}


def options(base: ReaderConfig = READER, **overrides) -> dict:
    """Keyword arguments of a DataModule: reading options (``num_workers=2``) go into its ``reader``."""
    read = {k: v for k, v in overrides.items() if k in READER_FIELDS}
    rest = {k: v for k, v in overrides.items() if k not in READER_FIELDS}
    return {**rest, "reader": dataclasses.replace(base, **read)}


def module(root, **overrides) -> MultiTurnDataModule:
    dm = MultiTurnDataModule(root, SMALL, **options(**overrides))
    dm.prepare_data()
    dm.setup("fit")
    return dm


def fingerprint(batch: PackedBatch) -> tuple:
    """What tells two packs apart: their layout, their tokens and their pixels."""
    pixels = sum(float(image.sum()) for image in batch.vae_images)
    return tuple(batch.sample_lens), tuple(batch.packed_text_ids.tolist()), round(pixels, 3)


def take(loader, n: int) -> list[tuple]:
    iterator = iter(loader)
    return [fingerprint(next(iterator)) for _ in range(n)]


def trainer(steps: int, **kwargs) -> L.Trainer:
    return L.Trainer(
        max_steps=steps, accelerator="cpu", logger=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, **kwargs,
    )  # fmt: skip
