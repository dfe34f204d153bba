"""Errors that stop a run; each message says what happened and what to change."""


class TrainingError(RuntimeError):
    """A run that cannot go on (non-finite loss, failing reward, no data to train on)."""


class RewardError(TrainingError):
    """A reward function raised or returned something that is not a finite number."""
