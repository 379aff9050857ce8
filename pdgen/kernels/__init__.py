"""Triton kernels; each has a pure PyTorch reference beside the code that calls it."""
