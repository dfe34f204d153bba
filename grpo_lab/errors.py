"""Errors that stop a run; each message says what happened and what to change.

Every error grpo_lab expects (bad input, a run that cannot go on) is a `GrpoLabError`, so the
command line turns each into one line without importing the modules that raise them.
"""


class GrpoLabError(Exception):
    """An expected failure: its message, one line, says what is wrong and what to do."""


class TrainingError(GrpoLabError, RuntimeError):
    """A run that cannot go on (non-finite loss, failing reward, no data to train on)."""


class RewardError(TrainingError):
    """A reward function raised or returned something that is not a finite number."""
