"""Inference: the interleaved Plan -> Sketch -> Inspect -> Refine loop on a BAGEL trunk, and what it costs.

Start at `generate` (loop.py)::

    from pdgen.inference import GenerationConfig, generate
    from pdgen.data.packing import PackingConfig

    result = generate(trunk, tokenizer, "a red circle left of a blue square",
                      GenerationConfig.from_name("tiny"), seed=0, packing=PackingConfig.from_name("tiny"))
    result.final_image, result.trajectory or result.error, result.costs.sampling_steps

config.py holds `GenerationConfig`, sampler.py the Euler sampler and guidance, context.py the KV-cached
(and recomputing reference) sequences and the guidance contexts, control.py the hook that lets tests or an
external planner take decisions, costs.py the cost counters, baselines.py the training-free baselines of the
paper's Table 4 (external planner, external inspector), interactive.py the human in the loop.
docs/inference.md draws the loop.
"""

from pdgen.inference.config import GENERATION_PRESETS, GenerationConfig
from pdgen.inference.control import Controller, LoopState, ModelDecides, Reviewer, Script
from pdgen.inference.costs import Costs, summarise
from pdgen.inference.loop import Generation, StopReason, generate

__all__ = [
    "GENERATION_PRESETS",
    "Controller",
    "Costs",
    "Generation",
    "GenerationConfig",
    "LoopState",
    "ModelDecides",
    "Reviewer",
    "Script",
    "StopReason",
    "generate",
    "summarise",
]
