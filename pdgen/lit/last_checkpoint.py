"""`ModelCheckpoint`: Lightning's, and ``last.ckpt`` also holds the step where training ended.

Lightning writes ``last.ckpt`` only beside a scheduled save (``every_n_train_steps``), so a run that stops
between two of them (the ``max_time`` guard, a ``max_steps`` the interval does not divide, a stop signal)
keeps the state of the save before. A 25-minute guard that stopped the embedded recipe at step 4,456 of 4,500
left ``last.ckpt`` at step 3,000, and `pdgen predict` on it silently dropped 1,456 steps of training. This
subclass writes ``last.ckpt`` once more at the end of `fit` when its step is not the one trained last.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch import LightningModule, Trainer


class ModelCheckpoint(L.pytorch.callbacks.ModelCheckpoint):
    """Lightning's `ModelCheckpoint`, same arguments; with ``save_last``, ``last.ckpt`` is the last step's."""

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        if self.save_last and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
