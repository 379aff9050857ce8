"""The conflict build: its spec (a self-sampled one needs the checkpoint's tokenizer).

The stages have their own tests: the step judge (tests/judges/test_step.py), scene descriptions
(tests/scene/test_describe.py), symbolic samples (test_conflict_sample.py), self-sampling
(test_self_sample.py)."""

import pytest

from pdgen.data.conflict import ConflictSource


def test_a_self_sampled_source_needs_the_checkpoints_tokenizer():
    with pytest.raises(ValueError, match="needs the tokenizer"):
        ConflictSource(from_ckpt="stage1.ckpt")
