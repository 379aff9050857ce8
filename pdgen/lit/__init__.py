"""Training: the LightningModule (module.py), callbacks (callbacks.py), QLoRA's 4-bit base (quantize.py)."""

from pdgen.lit.callbacks import EMA, TrajectoryLogger
from pdgen.lit.module import ProcessDrivenModule

__all__ = ["EMA", "ProcessDrivenModule", "TrajectoryLogger"]
