"""The Task protocol, the records it returns, and the task registry.

A task owns three things: its prompts (train and eval sets, fixed by a seed), its verifier (the
outcome reward of a completion, and optionally one reward per checkable step), and its alphabet
(every character a prompt or a completion may contain, which is what the character tokenizer
needs). Trainers see only this protocol, so a new task is one class and one ``@register_task``.

Completions are always passed as decoded text *without* the end-of-sequence token, together
with ``finished`` (whether that token was emitted): a completion that ran out of tokens never
earns a reward, however right its text looks.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

from grpo_lab.errors import GrpoLabError
from grpo_lab.registry import Registry


class TaskError(GrpoLabError, ValueError):
    """Malformed task data or bad task options; the message says what is wrong and how to fix it."""


@dataclass(frozen=True)
class Example:
    """One prompt with its reference answer.

    ``prompt`` is the text fed to the model (``"4+5+7+0-1="``), ``answer`` the reference final
    answer in the form ``Task.extract_answer`` returns (``"15"``), ``target`` the full reference
    completion for SFT, without the EOS token (``"9,16,16,15"``). ``fields`` holds whatever else a
    reward function may read (a data set's columns: ``example.fields["difficulty"]``).
    """

    prompt: str
    answer: str
    target: str
    fields: Mapping[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class StepReward:
    """The reward of one checkable step of a completion.

    ``end`` is the index in the completion string of the step's last character (inclusive), so a
    trainer can map the step onto the token that produced that character.
    """

    end: int
    reward: float


@runtime_checkable
class Task(Protocol):
    """What every task offers to trainers, evaluation and the tokenizer."""

    name: str
    alphabet: str

    def train_examples(self) -> Sequence[Example]: ...

    def eval_examples(self) -> Sequence[Example]: ...

    def reward(self, example: Example, completion: str, finished: bool) -> float:
        """1.0 if ``finished`` and the final answer equals ``example.answer``, else 0.0."""
        ...

    def step_rewards(
        self, example: Example, completion: str, finished: bool
    ) -> list[StepReward] | None:
        """One reward per step of the completion, or None where the task has no steps."""
        ...

    def is_correct(self, example: Example, completion: str, finished: bool) -> bool: ...

    def extract_answer(self, completion: str) -> str | None:
        """The final answer of a completion in canonical form (for maj@k voting), or None."""
        ...


class VerifiableTask:
    """Shared verifier logic: a completion is correct when it finished and its extracted
    answer equals the reference. Subclasses set ``name`` and ``alphabet``, fill ``_train`` and
    ``_eval``, and implement ``extract_answer``."""

    name: str = ""
    alphabet: str = ""
    _train: tuple[Example, ...] = ()
    _eval: tuple[Example, ...] = ()

    def train_examples(self) -> Sequence[Example]:
        return self._train

    def eval_examples(self) -> Sequence[Example]:
        return self._eval

    def extract_answer(self, completion: str) -> str | None:
        raise NotImplementedError

    def is_correct(self, example: Example, completion: str, finished: bool) -> bool:
        if not finished:
            return False
        answer = self.extract_answer(completion)
        return answer is not None and answer == example.answer

    def reward(self, example: Example, completion: str, finished: bool) -> float:
        return 1.0 if self.is_correct(example, completion, finished) else 0.0

    def step_rewards(
        self, example: Example, completion: str, finished: bool
    ) -> list[StepReward] | None:
        return None

    @property
    def options(self) -> dict[str, Any]:
        """The options this task was built with (flat, for logging as run parameters)."""
        return dict(getattr(self, "_options", {}))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}({args})"


TaskFactory = Callable[..., Task]
TASK_METHODS = ("train_examples", "eval_examples", "reward", "is_correct", "extract_answer")

TASKS: Registry[TaskFactory] = Registry("task", error=TaskError)
"""Task name -> factory called as ``factory(seed=..., **options)``."""


def register_task(name: str) -> Callable[[TaskFactory], TaskFactory]:
    """Class decorator that adds a task to ``TASKS`` under ``name``."""
    return TASKS.register(name)


def task_factory(name: str) -> TaskFactory:
    """The factory of the task registered as ``name``, or named by import path
    (``my_pkg.tasks:MyTask``: a class or function called as ``factory(seed=..., **options)``)."""
    factory = TASKS.get(name).obj
    if not callable(factory):
        raise TaskError(f"task {name!r} names a {type(factory).__name__}, not a class or function that "
                        "builds a task")
    return factory


def build_task(name: str, *, seed: int, **options: Any) -> Task:
    """Build the task registered as ``name`` (or named by import path) with its data fixed by
    ``seed``.

    Unknown task names and unknown options raise ``TaskError`` (a ``ValueError``) listing what
    is known. A task named by import path must offer the `Task` protocol.
    """
    factory = task_factory(name)
    what = f"task {name!r} names {'class' if isinstance(factory, type) else 'function'} " \
           f"{getattr(factory, '__qualname__', factory)!s}"
    if isinstance(factory, type):
        missing = [attr for attr in TASK_METHODS if not callable(getattr(factory, attr, None))]
        if missing:
            raise TaskError(f"{what}, which has no {', '.join(missing)}: it is not a task; a task class offers "
                            f"name, alphabet and {', '.join(TASK_METHODS)} (subclass grpo_lab.tasks.VerifiableTask) "
                            "and is built as Class(seed=..., **task.kwargs)")
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        parameters = {}
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    if not accepts_any and "seed" not in parameters:
        raise TaskError(f"{what}, which takes no seed: a task is built as {name.rpartition(':')[2]}(seed=..., "
                        "**task.kwargs), its data fixed by the seed (task.data_seed); add a keyword argument seed")
    if not accepts_any:
        known_options = sorted(p for p in parameters if p != "seed")
        unknown = sorted(set(options) - set(known_options))
        if unknown:
            raise TaskError(
                f"{name}: unknown option(s) {', '.join(map(repr, unknown))}; "
                f"known options: {', '.join(known_options) or '(none)'}"
            )
    task = factory(seed=seed, **options)
    missing = [attr for attr in ("name", "alphabet", "train_examples", "eval_examples", "reward", "is_correct",
                                 "extract_answer") if not hasattr(task, attr)]
    if missing:
        raise TaskError(f"task {name!r} built a {type(task).__name__} without {', '.join(missing)}; a task offers "
                        "the grpo_lab.tasks.Task protocol (subclass grpo_lab.tasks.VerifiableTask)")
    return task


def check_int(task: str, option: str, value: Any, *, minimum: int) -> int:
    """Validate an integer option (bools rejected) and return it."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TaskError(f"{task}: option {option} must be an integer, got {value!r}")
    if value < minimum:
        raise TaskError(f"{task}: option {option} must be >= {minimum}, got {value}")
    return value


def check_bool(task: str, option: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TaskError(f"{task}: option {option} must be true or false, got {value!r}")
    return value
