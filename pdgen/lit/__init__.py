"""Training and prediction: the LightningModule (module.py), callbacks (callbacks.py), ShapesEval during
validation (shapes_eval.py), QLoRA's 4-bit base (quantize.py), what `predict_step` runs (predict.py) and the
prediction writer (writer.py)."""

from pdgen.lit.callbacks import EMA, TrajectoryLogger
from pdgen.lit.module import ProcessDrivenModule
from pdgen.lit.shapes_eval import ShapesEvalMonitor
from pdgen.lit.writer import PredictionWriter

__all__ = ["EMA", "PredictionWriter", "ProcessDrivenModule", "ShapesEvalMonitor", "TrajectoryLogger"]
