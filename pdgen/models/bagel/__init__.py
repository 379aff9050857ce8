"""A faithful BAGEL (Qwen2-MoT + SigLIP NaViT + FLUX autoencoder) that loads the release and trains on a CPU.

Start at `BagelTrunk` (trunk.py) and `BagelConfig.from_name` (config.py); checkpoint.py reads and writes
the release layout, cache.py is the inference KV cache, flow.py the rectified-flow conventions.
"""

from pdgen.models.bagel.cache import KVCache
from pdgen.models.bagel.checkpoint import CheckpointError, KeyReport
from pdgen.models.bagel.config import PRESETS, AutoEncoderConfig, BagelConfig, LLMConfig, ViTConfig
from pdgen.models.bagel.flow import sample_timesteps, shift_timesteps
from pdgen.models.bagel.trunk import BagelTrunk, TrunkOutput

__all__ = [
    "PRESETS",
    "AutoEncoderConfig",
    "BagelConfig",
    "BagelTrunk",
    "CheckpointError",
    "KVCache",
    "KeyReport",
    "LLMConfig",
    "TrunkOutput",
    "ViTConfig",
    "sample_timesteps",
    "shift_timesteps",
]
