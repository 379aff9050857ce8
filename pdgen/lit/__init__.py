"""Training and prediction: the LightningModule (module.py), callbacks (callbacks.py), ShapesEval during
validation (shapes_eval.py), the divergence guard (guard.py), atomic checkpoint files (checkpoint_io.py), a
`last.ckpt` of the step training ended at (last_checkpoint.py), QLoRA's 4-bit base (quantize.py), what
`predict_step` runs (predict.py), the prediction writer (writer.py), progress lines for log files
(progress.py) and LightningCLI as `pdgen fit|validate|test|predict` starts it (runner.py)."""

from pdgen.lit.callbacks import EMA, TrajectoryLogger
from pdgen.lit.checkpoint_io import AtomicCheckpointIO
from pdgen.lit.guard import DivergenceGuard
from pdgen.lit.last_checkpoint import ModelCheckpoint
from pdgen.lit.module import LoRAConfig, ProcessDrivenModule, ScheduleConfig
from pdgen.lit.shapes_eval import ShapesEvalMonitor
from pdgen.lit.writer import PredictionWriter

__all__ = [
    "EMA",
    "AtomicCheckpointIO",
    "DivergenceGuard",
    "LoRAConfig",
    "ModelCheckpoint",
    "PredictionWriter",
    "ProcessDrivenModule",
    "ScheduleConfig",
    "ShapesEvalMonitor",
    "TrajectoryLogger",
]
