"""QLoRA's base: swap chosen `nn.Linear` layers for bitsandbytes 4-bit (NF4) layers, weights frozen.

bitsandbytes 0.50 runs `Linear4bit` on a CPU (tested, `docs/training.md`), so QLoRA trains on this
machine too, slowly; what it saves is memory, which matters on a GPU with the 7B trunk. Without
bitsandbytes installed the swap fails with a `ValueError` that says so. LoRA adapters are injected *after*
the swap (peft wraps `Linear4bit` layers natively), and computation runs in the original weight dtype.
"""

from __future__ import annotations

import re

from torch import nn


def quantize_linear_4bit(model: nn.Module, pattern: str, quant_type: str = "nf4") -> list[str]:
    """Replace each `nn.Linear` whose name (inside `model`) full-matches `pattern`; returns the names.

    Args:
        model: the module to edit in place.
        pattern: regex over module names, as peft's string `target_modules`.
        quant_type: `nf4` (QLoRA's) or `fp4`.
    """
    try:
        import bitsandbytes as bnb
    except ImportError as err:  # pragma: no cover - bitsandbytes is a dependency
        raise ValueError(
            f"model.finetune=qlora needs bitsandbytes ({err}); pip install bitsandbytes"
        ) from None
    regex = re.compile(pattern)
    targets = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and regex.fullmatch(name)
    ]
    if not targets:
        raise ValueError(f"model.finetune=qlora: no nn.Linear matches {pattern!r}")
    for name in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        linear: nn.Linear = getattr(parent, child)
        device = linear.weight.device
        quantized = bnb.nn.Linear4bit(
            linear.in_features,
            linear.out_features,
            bias=linear.bias is not None,
            compute_dtype=linear.weight.dtype,
            quant_type=quant_type,
        )
        # Quantisation happens when Params4bit moves to a device; on the meta device it cannot.
        if linear.weight.is_meta:
            raise ValueError(f"model.finetune=qlora: {name} is still on the meta device; load weights first")
        quantized.weight = bnb.nn.Params4bit(
            linear.weight.data.float().cpu(), requires_grad=False, quant_type=quant_type
        ).to(device)
        if linear.bias is not None:
            quantized.bias = nn.Parameter(linear.bias.data.clone(), requires_grad=False)
        setattr(parent, child, quantized)
    return targets
