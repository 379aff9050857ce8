"""Run the Triton kernels under the interpreter where there is no GPU.

The variable must be set before any ``@triton.jit`` decorator runs, i.e. before the kernel module is
first imported; conftest files are imported before the test modules beside them.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
