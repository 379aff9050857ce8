"""`ProgressLog`: what a run is doing, as plain lines, where Lightning's progress bar cannot be read.

Lightning draws a progress bar that redraws itself in place: in a log file (`pdgen fit ... > fit.log 2>&1`,
a batch job) it is one line of carriage returns, unreadable until the run ends. `pdgen` turns the bar off
when stderr is not a terminal (`pdgen.lit.runner`), and this callback writes to stderr instead, whenever
the trainer has no progress bar:

    step 100/1000 · train/loss 2.492 · train/mse 1.025 · 3.1 images/s · 1m40s so far · about 15m00s left
    validation at step 100 (4+4+4 batches): val/multiturn/loss 2.782 · val/conflict/loss 2.792 · ... · 9s
    trained 1000 steps in 16m40s
    predict: 30/90 batches (33%), 0.5 batches/s, 1m00s so far, about 2m00s left

The metrics are the ones the module shows in the progress bar (`self.log(..., prog_bar=True)`): the
training ones on each step line, the validation ones after each validation. Images per second count the
images in the packs (`PackedBatch.vae_images`) of every rank: rank 0's count times the ranks, which read packs
of the same token budget. The time left is the steps left at the last interval's pace, or what
`trainer.max_time` leaves if that is sooner.
"""

from __future__ import annotations

import time
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import Timer

from pdgen.console import LineProgress, duration, write_line


class ProgressLog(Callback):
    def __init__(self, every_n_steps: int | None = None) -> None:
        """Progress lines on stderr when the trainer draws no progress bar.

        Args:
            every_n_steps: a training line every this many optimizer steps; None writes about twenty in a
                run (every `max_steps / 20` steps, at least every step), or one every 50 steps when
                `max_steps` is not set.
        """
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"ProgressLog.every_n_steps={every_n_steps} must be >= 1")
        self.every_n_steps = every_n_steps
        self._every = every_n_steps or 50
        self._started = self._interval_started = 0.0
        self._interval_step = self._last_logged = 0
        self._images = 0
        self._validation_started = 0.0
        self._predict: LineProgress | None = None

    def _writes(self, trainer: Trainer) -> bool:
        """Whether this callback writes: no bar is drawn, and it is the trainer's first `ProgressLog` (`pdgen`
        adds one to every run, after the config's callbacks: a config's own, with its settings, wins)."""
        first = next(callback for callback in trainer.callbacks if isinstance(callback, ProgressLog))
        return trainer.progress_bar_callback is None and trainer.is_global_zero and first is self

    # ---- training ------------------------------------------------------------------------------------

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._started = self._interval_started = time.monotonic()
        self._interval_step = self._last_logged = trainer.global_step
        if self.every_n_steps is None and trainer.max_steps > 0:
            self._every = max(1, trainer.max_steps // 20)
        self._images = 0

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self._writes(trainer):
            return
        self._images += len(getattr(batch, "vae_images", ()))
        step = trainer.global_step
        if step % self._every or step == self._last_logged:  # accumulating: several batches a step
            return
        now = time.monotonic()
        seconds, steps = now - self._interval_started, step - self._interval_step
        parts = [f"step {step}/{trainer.max_steps}" if trainer.max_steps > 0 else f"step {step}"]
        parts += _metrics(trainer, "train")
        if self._images:
            parts.append(f"{self._images * trainer.world_size / seconds:.1f} images/s")
        parts.append(f"{duration(now - self._started)} so far")
        if left := _time_left(trainer, step, seconds / steps):
            parts.append(f"about {duration(left)} left")
        write_line(" · ".join(parts))
        self._interval_started, self._interval_step, self._last_logged, self._images = now, step, step, 0

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._writes(trainer):
            write_line(f"trained {trainer.global_step} steps in {duration(time.monotonic() - self._started)}")

    # ---- validation ----------------------------------------------------------------------------------

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._validation_started = time.monotonic()

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or not self._writes(trainer):
            return
        batches = "+".join(str(int(n)) for n in trainer.num_val_batches)
        scores = " · ".join(_metrics(trainer, "val")) or "no metrics"
        seconds = duration(time.monotonic() - self._validation_started)
        write_line(f"validation at step {trainer.global_step} ({batches} batches): {scores} · {seconds}")

    # ---- prediction ----------------------------------------------------------------------------------

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._writes(trainer):
            total = int(sum(trainer.num_predict_batches))
            self._predict = LineProgress(total, "predict", "batches")

    def on_predict_batch_end(self, trainer: Trainer, *_: Any) -> None:
        if self._predict is not None:
            self._predict.update()

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._predict is not None:
            self._predict.close()
            self._predict = None


def _metrics(trainer: Trainer, prefix: str) -> list[str]:
    """`name value` of the progress-bar metrics whose names start with `prefix`, four significant digits."""
    return [
        f"{name} {float(value):.4g}"
        for name, value in trainer.progress_bar_metrics.items()
        if name.startswith(prefix)
    ]


def _time_left(trainer: Trainer, step: int, seconds_per_step: float) -> float | None:
    """Seconds until `max_steps` at this pace, or until `max_time` if that is sooner; None if unbounded."""
    left = (trainer.max_steps - step) * seconds_per_step if trainer.max_steps > 0 else None
    timer = next((callback for callback in trainer.callbacks if isinstance(callback, Timer)), None)
    remaining = timer.time_remaining() if timer is not None else None
    if remaining is not None:
        left = remaining if left is None else min(left, remaining)
    return left
