"""pdgen: process-driven image generation.

A unified multimodal model builds an image in a loop of Plan (`<ins>…</ins><des>…</des>`), Sketch (a
draft image), Inspect (a critique, with `<refine>…</refine>` when something is wrong) and Refine (a
corrected plan and image), all in one interleaved autoregressive sequence. The one data type every
stage shares is `pdgen.trajectory.Trajectory`; the command line is `pdgen` (`pdgen.cli`).
"""

__version__ = "0.1.0"
