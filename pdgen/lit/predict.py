"""What `ProcessDrivenModule.predict_step` does: one `PredictRequest` in, one `Prediction` out.

``pdgen predict`` runs Lightning's predict loop over a `pdgen.data.prompts.PromptsDataModule`; each batch is
one sample of one prompt. The step reads everything but the weights from the data module, because with
``--ckpt_path`` the checkpoint's hyperparameters win over command-line model arguments (see that module):
the tokenizer and packing config the model was trained with, the `GenerationConfig`, and a fresh
controller (the model alone, a training-free baseline, or the interactive terminal). It then runs
`pdgen.inference.generate` on the trunk with the request's seed, and the request's input image when it
is an edit. A `pdgen.lit.writer.PredictionWriter`
writes the results to disk.

EMA weights. A fit with the `pdgen.lit.EMA` callback saves the average in the checkpoint's callback state
(``checkpoint["callbacks"]["EMA"]["shadow"]``), while the model's state dict holds the raw weights. The
first step of a predict run (Lightning has just restored the raw weights from ``--ckpt_path``) copies the
average into the module, so predictions use the EMA weights whenever the checkpoint has them, whether or
not the predict run lists the EMA callback. The file is opened memory-mapped, so only the shadow is read.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
from lightning.pytorch import LightningModule

from pdgen.data.prompts import PredictRequest, PromptsDataModule
from pdgen.images import open_image
from pdgen.inference.loop import Generation, generate
from pdgen.lit.callbacks import EMA
from pdgen.lit.checkpoint_io import load_checkpoint_file

log = logging.getLogger(__name__)


@dataclass
class Prediction:
    """One generated sample and how it was made.

    Attributes:
        request: the prompt, its metadata, the sample number and seed.
        generation: text, images, trajectory (or why it is invalid), stop reason and costs.
        mode: the `GenerationConfig.mode` it ran in.
        controller: who drove the loop with the model: ``model``, ``planner``, ``inspector`` or
            ``interactive``.
    """

    request: PredictRequest
    generation: Generation
    mode: str
    controller: str


def predict(module: LightningModule, request: PredictRequest, batch_idx: int) -> Prediction:
    """Generate one sample for `request` with the module's trunk (the body of ``predict_step``).

    Raises:
        ValueError: the trainer's data module is not a `PromptsDataModule`, or the checkpoint's EMA
            average names parameters the module does not have.
    """
    trainer = module.trainer
    data = trainer.datamodule
    if not isinstance(data, PromptsDataModule):
        raise ValueError(
            f"predict needs data: pdgen.data.prompts.PromptsDataModule (it holds the prompts, tokenizer and "
            f"generation options), got {type(data).__name__}; e.g. pdgen predict -c configs/full.yaml "
            "-c configs/predict.yaml --ckpt_path CKPT"
        )
    if batch_idx == 0 and trainer.ckpt_path is not None:
        load_ema_weights(module, trainer.ckpt_path)
    config = data.generation_config
    source = None if request.image is None else open_image(request.image).convert("RGB")
    generation = generate(
        module.trunk,
        data.tokenizer,
        request.prompt,
        config,
        request.seed,
        data.packing_config,
        controller=data.controller(request),
        input_image=source,
    )
    return Prediction(request, generation, config.mode, data.controller_name)


def load_ema_weights(module: LightningModule, ckpt_path: str | os.PathLike[str]) -> bool:
    """Copy the EMA average saved in `ckpt_path` into `module`; False when the checkpoint has none.

    Raises:
        ValueError: the average names a parameter `module` does not have (another model's checkpoint).
    """
    checkpoint = load_checkpoint_file(ckpt_path, mmap=True)
    state = checkpoint.get("callbacks", {}).get(EMA().state_key)
    if not state or not state.get("shadow"):
        log.info("%s holds no EMA average: predicting with the raw weights", ckpt_path)
        return False
    params = dict(module.named_parameters())
    unknown = sorted(set(state["shadow"]) - set(params))
    if unknown:
        raise ValueError(
            f"{ckpt_path}: the EMA average names {len(unknown)} parameter(s) the model does not have, "
            f"e.g. {unknown[0]!r}: is it this model's checkpoint?"
        )
    with torch.no_grad():
        for name, value in state["shadow"].items():
            params[name].copy_(value)
    log.info("predicting with the EMA weights of %s (decay %s)", ckpt_path, state["decay"])
    return True
