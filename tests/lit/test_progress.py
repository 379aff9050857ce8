"""`ProgressLog`: training, validation and prediction progress as plain lines when there is no bar."""

import re

from lightning.pytorch import Trainer

from pdgen.lit.module import ScheduleConfig
from pdgen.lit.progress import ProgressLog


def fit(module, data, **trainer_options):
    trainer = Trainer(
        accelerator="cpu",
        max_steps=4,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        val_check_interval=2,
        limit_val_batches=1,
        # `pdgen` adds a ProgressLog after the config's callbacks: only the first one writes.
        callbacks=[ProgressLog(), ProgressLog(every_n_steps=3)],
        **trainer_options,
    )
    trainer.fit(module, datamodule=data)


def test_without_a_bar_training_and_validation_write_lines(make_module, world_packs, capsys) -> None:
    world_packs.packs_consumed = 0
    fit(make_module(schedule=ScheduleConfig(warmup_steps=1)), world_packs, enable_progress_bar=False)
    lines = capsys.readouterr().err.splitlines()
    steps = [line for line in lines if line.startswith("step ")]
    # By default about twenty lines a run: here one a step.
    assert [line.split(" · ")[0] for line in steps] == ["step 1/4", "step 2/4", "step 3/4", "step 4/4"]
    # step, the module's progress-bar metrics, images per second, time so far and left
    assert re.fullmatch(
        r"step 2/4 · train/loss [\d.]+ · train/mse [\d.]+ · [\d.]+ images/s · \d+s so far · about \d+s left",
        steps[1],
    ), steps[1]
    validations = [line for line in lines if line.startswith("validation at step")]
    assert len(validations) == 2 and re.fullmatch(
        r"validation at step 2 \(1 batches\): val/loss [\d.]+ · \d+s", validations[0]
    ), validations
    assert lines[-1].startswith("trained 4 steps in ")


def test_only_the_first_progress_log_writes_and_only_without_a_bar() -> None:
    first, second = ProgressLog(), ProgressLog(every_n_steps=10)
    without_bar = Trainer(logger=False, enable_progress_bar=False, callbacks=[first, second])
    assert first._writes(without_bar) and not second._writes(without_bar)
    with_bar = Trainer(logger=False, enable_progress_bar=True, callbacks=[first, second])
    assert not first._writes(with_bar)
