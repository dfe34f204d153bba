"""Tasks: prompts with verifiable answers, the verifiers that turn completions into rewards, and
the reward functions a run may combine.

``build_task(name, seed=..., **options)`` builds a registered task, or one named by import path
(``my_pkg.tasks:MyTask``); ``TASKS`` lists them: ``addition`` and ``chain`` (generated, see
``arithmetic``), ``gsm8k`` (a preset of ``dataset``, see ``gsm8k``) and ``dataset`` (rows of any
local data, see ``dataset``). Answer extractors and comparisons are in ``answers``; reward
functions (``REWARDS``, import paths, weighted sums) in ``rewards``.
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
    task_factory,
)
from .arithmetic import AdditionTask, ChainTask
from .gsm8k import GSM8KTask
from .dataset import DatasetTask
from .rewards import REWARDS, RewardSet, build_rewards, register_reward

register_task("dataset")(DatasetTask)  # after the GSM8K preset: `dataset` is listed last

__all__ = [
    "REWARDS",
    "TASKS",
    "AdditionTask",
    "ChainTask",
    "DatasetTask",
    "Example",
    "GSM8KTask",
    "RewardSet",
    "StepReward",
    "Task",
    "TaskError",
    "VerifiableTask",
    "build_rewards",
    "build_task",
    "register_reward",
    "register_task",
    "task_factory",
]
