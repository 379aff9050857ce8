"""Training and prediction: the LightningModule (module.py), callbacks (callbacks.py), QLoRA's 4-bit base
(quantize.py), what `predict_step` runs (predict.py), the prediction writer (writer.py), progress lines for
log files (progress.py) and LightningCLI as `pdgen fit|validate|test|predict` starts it (runner.py)."""

from pdgen.lit.callbacks import EMA, TrajectoryLogger
from pdgen.lit.module import ProcessDrivenModule
from pdgen.lit.writer import PredictionWriter

__all__ = ["EMA", "PredictionWriter", "ProcessDrivenModule", "TrajectoryLogger"]
