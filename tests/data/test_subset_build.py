"""What every subset build shares: the spec checks name the spec and the field."""

import pytest

from pdgen.data.alignment import AlignmentSpec
from pdgen.data.base import BaseSpec
from pdgen.data.conflict import ConflictSpec
from pdgen.data.edit import EditSpec
from pdgen.data.multiturn import MultiTurnSpec


@pytest.mark.parametrize(
    ("spec", "fields", "message"),
    [
        (MultiTurnSpec, {"num_trajectories": 0}, r"MultiTurnSpec\.num_trajectories must be >= 1, got 0"),
        (MultiTurnSpec, {"augment": 1.5}, r"MultiTurnSpec\.augment is a probability in \[0, 1\], got 1.5"),
        (BaseSpec, {"val_size": -1}, r"BaseSpec\.val_size must be >= 0, got -1"),
        (BaseSpec, {"background": 2.0}, r"BaseSpec\.background is a probability"),
        (ConflictSpec, {"negative_fraction": -0.1}, r"ConflictSpec\.negative_fraction is a probability"),
        (
            AlignmentSpec,
            {"negatives_per_positive": -1},
            r"AlignmentSpec\.negatives_per_positive must be >= 0",
        ),
        (EditSpec, {"world": "nowhere"}, r"unknown world preset 'nowhere'"),
    ],
)
def test_every_build_spec_refuses_bad_fields_by_name(spec, fields, message):
    with pytest.raises(ValueError, match=message):
        spec(**fields)
