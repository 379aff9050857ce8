"""Fixtures for the scene tests: the GenEval prompt file, read from the shared benchmark folder."""

import json
from pathlib import Path

import pytest

GENEVAL_METADATA = (
    Path(__file__).resolve().parents[2]
    / ".."
    / "shared"
    / "benchmarks"
    / "geneval"
    / "evaluation_metadata.jsonl"
)


@pytest.fixture(scope="session")
def geneval_rows() -> list[dict]:
    """The 553 rows of GenEval's evaluation_metadata.jsonl; skips the test where the file is absent."""
    if not GENEVAL_METADATA.is_file():
        pytest.skip(f"GenEval metadata not found at {GENEVAL_METADATA}")
    return [json.loads(line) for line in GENEVAL_METADATA.read_text().splitlines() if line.strip()]
