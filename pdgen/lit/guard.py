"""`DivergenceGuard`: a run whose loss or gradients stop being finite ends, loudly, with its last good
checkpoint intact.

Without it a diverged run keeps stepping: one NaN gradient turns every weight it reaches into NaN, the
moving average follows, the run exits 0, and the next periodic save overwrites `last.ckpt` with the wreck.

The guard looks at each training step twice, before anything is changed: the loss before the backward
pass (`on_before_backward`), and the gradient norm before the optimizer step (`on_before_optimizer_step`,
which Lightning calls before it clips). A step with a non-finite value is a *bad step*:

- within the first `skip_bad_steps` bad steps of the run, the update is skipped (every gradient is dropped,
  so the optimizer leaves weights and moments as they were) and a warning names the step;
- the next bad step (on any rank: the ranks agree) raises `TrainingDiverged` from the optimizer hook,
  before the weights change. The exception ends `fit` before `ModelCheckpoint` saves that step, so the
  newest checkpoint on disk is the last finite one, the EMA copy in it included, and `pdgen fit` exits
  non-zero with the message: the step, the loss terms logged for it, and the last finite loss.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from pdgen.lit.callbacks import EMA

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """A training step's loss or gradient norm was not finite (after `skip_bad_steps` were used up)."""


class DivergenceGuard(Callback):
    def __init__(self, skip_bad_steps: int = 0) -> None:
        """Stop a run at its first non-finite loss or gradient norm, before the weights change.

        Args:
            skip_bad_steps: bad steps to skip (no update, a warning) before the guard stops the run; 0
                stops at the first. A skipped step still counts as a step (data and schedule move on).
        """
        if skip_bad_steps < 0:
            raise ValueError(f"DivergenceGuard.skip_bad_steps={skip_bad_steps} must be >= 0")
        self.skip_bad_steps = skip_bad_steps
        self.bad_steps = 0
        self._loss: float | None = None
        self._last_finite: tuple[int, float] | None = None

    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: torch.Tensor) -> None:
        self._loss = float(loss.detach())

    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        norms = torch.stack([torch.linalg.vector_norm(g) for g in grads]) if grads else torch.zeros(1)
        norm = float(torch.linalg.vector_norm(norms))
        loss = math.nan if self._loss is None else self._loss
        # Every rank decides alike (a rank's shard of the gradients may be the only non-finite one): one
        # rank stopping alone would leave the others waiting in a collective.
        finite = math.isfinite(loss) and math.isfinite(norm)
        if not trainer.strategy.reduce_boolean_decision(not finite, all=False):
            self._last_finite = (trainer.global_step, loss)
            return
        self.bad_steps += 1
        what = self._describe(trainer, loss, norm)
        if self.bad_steps > self.skip_bad_steps:
            raise TrainingDiverged(f"{what}; stopped: the last checkpoint saved is the last finite one")
        log.warning("skipping the update of %s (bad step %d of %d allowed)", what, self.bad_steps,
                    self.skip_bad_steps)  # fmt: skip
        for group in optimizer.param_groups:
            for p in group["params"]:
                p.grad = None  # the optimizer skips a parameter without a gradient: weights and moments stay

    def _describe(self, trainer: Trainer, loss: float, norm: float) -> str:
        terms = {
            name.removeprefix("train/"): float(value)
            for name, value in trainer.callback_metrics.items()
            if name.startswith("train/") and name.endswith(("loss", "ce", "mse"))
        }
        shown = ", ".join(f"{name} {value:.4g}" for name, value in sorted(terms.items())) or "none logged"
        last = "none" if self._last_finite is None else "{1:.4g} at step {0}".format(*self._last_finite)
        return (
            f"training diverged at step {trainer.global_step}: loss {loss:.4g}, gradient norm {norm:.4g} "
            f"(logged terms: {shown}; last finite loss {last})"
        )

    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Refuse to save weights that are not finite, the EMA average included (an update can overflow
        after a finite step): raising here stops the save before the file is written."""
        weights = dict(_tensors(checkpoint.get("state_dict", {})))
        for callback in trainer.callbacks:
            if isinstance(callback, EMA):
                weights.update(_tensors(checkpoint["callbacks"][callback.state_key], "EMA"))
        bad = [name for name, value in weights.items() if not _finite(value)]
        if bad:
            shown = ", ".join(bad[:5]) + (", ..." if len(bad) > 5 else "")
            raise TrainingDiverged(
                f"training diverged by step {trainer.global_step}: {len(bad)} tensor(s) of the checkpoint "
                f"are not finite ({shown}); it is not written: the last one saved is the last finite one"
            )

    def state_dict(self) -> dict[str, Any]:
        return {"bad_steps": self.bad_steps}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.bad_steps = state_dict["bad_steps"]


def _tensors(tree: Any, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """The plain tensors in nested dicts, with their dotted names."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _tensors(value, f"{prefix}.{key}" if prefix else str(key))
    elif type(tree) is torch.Tensor:  # plain local tensors: a sharded one would need its ranks to check
        yield prefix, tree


def _finite(tensor: torch.Tensor) -> bool:
    return not tensor.is_floating_point() or bool(torch.isfinite(tensor).all())
