"""Judges: check a plan against its prompt and an image against its instruction (`Verdict`)."""
