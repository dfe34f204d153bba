"""Tasks: prompts with verifiable answers, and the verifiers that turn completions into rewards.

``build_task(name, seed=..., **options)`` builds a registered task; ``TASKS`` lists them:
``addition`` and ``chain`` (generated, see ``arithmetic``) and ``gsm8k`` (local files or the
local Hugging Face cache, see ``gsm8k``).
"""

from .base import (
    TASKS,
    Example,
    StepReward,
    Task,
    TaskError,
    VerifiableTask,
    build_task,
    register_task,
)
from .arithmetic import AdditionTask, ChainTask
from .gsm8k import GSM8KTask

__all__ = [
    "TASKS",
    "AdditionTask",
    "ChainTask",
    "Example",
    "GSM8KTask",
    "StepReward",
    "Task",
    "TaskError",
    "VerifiableTask",
    "build_task",
    "register_task",
]
