"""Synthetic arithmetic tasks, generated in-process from a seed.

- ``addition``: ``"23+58="`` -> ``"81"``.
- ``chain``: ``"4+5+7+0-1="`` -> ``"9,16,16,15"``, the running result after each operation; the
  last one is the answer. Each running result is a checkable step, which gives process
  supervision (DeepSeekMath §4.1.3) a step reward without a learned reward model.

Both draw train and eval prompts from one ``random.Random(seed)`` without repetition, eval
first, so the two sets are disjoint and the eval set does not change with ``train_size``
(except when the sizes ask for more than half of all distinct prompts: then every prompt is
enumerated and shuffled instead, and eval is the first ``eval_size`` of that shuffle).
Answers are compared as exact strings: ``"015"`` is not ``"15"``.

Sizes: ``eval_size`` defaults to 512; ``train_size=None`` (the default) means 20000 prompts, or
every prompt not in the eval set when the task has fewer (2-digit addition has 10000 in all).
An explicit ``train_size`` larger than what is left raises ``TaskError``.
"""

from __future__ import annotations

import itertools
import random
import re
from collections import defaultdict
from typing import Callable, Iterator

from .base import (
    Example,
    StepReward,
    TaskError,
    VerifiableTask,
    check_bool,
    check_int,
    register_task,
)

_INTEGER = re.compile(r"-?[0-9]+")
_MAX_DRAWS_PER_EXAMPLE = 50
DEFAULT_TRAIN_SIZE = 20000


class SyntheticTask(VerifiableTask):
    """Seeded, disjoint train/eval sampling shared by the synthetic tasks."""

    def _build_sets(
        self,
        *,
        seed: int,
        train_size: int | None,
        eval_size: int,
        draw: Callable[[random.Random], Example],
        enumerate_all: Callable[[], Iterator[Example]],
        distinct_prompts: Callable[[int], int],
    ) -> None:
        """Fill ``_train`` and ``_eval``.

        ``distinct_prompts(at_least)`` returns the exact number of distinct prompts, or any
        number above ``at_least`` when there are more than that.
        """
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TaskError(f"{self.name}: seed must be an integer, got {seed!r}")
        if train_size is None:
            space = distinct_prompts(2 * (DEFAULT_TRAIN_SIZE + eval_size))
            train_size = max(1, min(DEFAULT_TRAIN_SIZE, space - eval_size))
        needed = train_size + eval_size
        space = distinct_prompts(2 * needed)
        if space < needed:
            raise TaskError(
                f"{self.name}: asked for {train_size} train + {eval_size} eval = {needed} "
                f"distinct prompts, but options {self.options} allow only {space}; lower "
                f"train_size/eval_size or widen the task (more digits or terms)"
            )
        rng = random.Random(seed)
        if space <= 2 * needed:
            # Rejection sampling would spend most draws on repeats: shuffle the whole space.
            pool = list(enumerate_all())
            rng.shuffle(pool)
            picked = pool[:needed]
        else:
            picked, seen = [], set()
            max_draws = _MAX_DRAWS_PER_EXAMPLE * needed + 1000
            for _ in range(max_draws):
                example = draw(rng)
                if example.prompt not in seen:
                    seen.add(example.prompt)
                    picked.append(example)
                    if len(picked) == needed:
                        break
            else:
                raise TaskError(
                    f"{self.name}: found only {len(picked)} distinct prompts of the {needed} "
                    f"asked for in {max_draws} draws; lower train_size/eval_size"
                )
        self._eval = tuple(picked[:eval_size])
        self._train = tuple(picked[eval_size:])


@register_task("addition")
class AdditionTask(SyntheticTask):
    """``a+b=`` with ``a, b`` uniform in ``0 .. 10**digits - 1``; the target is the sum."""

    name = "addition"
    alphabet = "+0123456789="

    def __init__(
        self, *, seed: int, digits: int = 2, train_size: int | None = None, eval_size: int = 512
    ) -> None:
        self.digits = check_int(self.name, "digits", digits, minimum=1)
        if train_size is not None:
            check_int(self.name, "train_size", train_size, minimum=1)
        eval_size = check_int(self.name, "eval_size", eval_size, minimum=0)
        self._options = {"digits": digits, "train_size": train_size, "eval_size": eval_size}
        limit = 10**digits

        def example(a: int, b: int) -> Example:
            return Example(prompt=f"{a}+{b}=", answer=str(a + b), target=str(a + b))

        self._build_sets(
            seed=seed,
            train_size=train_size,
            eval_size=eval_size,
            draw=lambda rng: example(rng.randrange(limit), rng.randrange(limit)),
            enumerate_all=lambda: itertools.starmap(
                example, itertools.product(range(limit), repeat=2)
            ),
            distinct_prompts=lambda at_least: limit * limit,
        )

    def extract_answer(self, completion: str) -> str | None:
        """The completion itself when it is an integer and nothing else, else None."""
        return completion if _INTEGER.fullmatch(completion) else None


@register_task("chain")
class ChainTask(SyntheticTask):
    """A ``+``/``-`` expression of ``min_terms .. max_terms`` numbers in
    ``0 .. 10**digits - 1``; the target lists the running result after each operation.

    Generation: the number of terms is uniform; the first number is uniform; each later
    (operator, number) pair is uniform over the pairs that keep the running total >= 0 when
    ``nonnegative`` (over all pairs otherwise).
    """

    name = "chain"
    alphabet = "+,-0123456789="

    def __init__(
        self,
        *,
        seed: int,
        min_terms: int = 3,
        max_terms: int = 5,
        digits: int = 1,
        nonnegative: bool = True,
        train_size: int | None = None,
        eval_size: int = 512,
    ) -> None:
        self.min_terms = check_int(self.name, "min_terms", min_terms, minimum=2)
        self.max_terms = check_int(self.name, "max_terms", max_terms, minimum=2)
        if max_terms < min_terms:
            raise TaskError(
                f"chain: max_terms ({max_terms}) must be >= min_terms ({min_terms})"
            )
        self.digits = check_int(self.name, "digits", digits, minimum=1)
        self.nonnegative = check_bool(self.name, "nonnegative", nonnegative)
        if train_size is not None:
            check_int(self.name, "train_size", train_size, minimum=1)
        eval_size = check_int(self.name, "eval_size", eval_size, minimum=0)
        self._options = {
            "min_terms": min_terms,
            "max_terms": max_terms,
            "digits": digits,
            "nonnegative": nonnegative,
            "train_size": train_size,
            "eval_size": eval_size,
        }
        self._limit = 10**digits
        self._build_sets(
            seed=seed,
            train_size=train_size,
            eval_size=eval_size,
            draw=self._draw,
            enumerate_all=self._enumerate,
            distinct_prompts=self._distinct_prompts,
        )

    # -- generation -------------------------------------------------------------------------

    @staticmethod
    def _example(first: int, steps: list[tuple[str, int]]) -> Example:
        total, results = first, []
        for op, number in steps:
            total = total + number if op == "+" else total - number
            results.append(str(total))
        prompt = str(first) + "".join(f"{op}{number}" for op, number in steps) + "="
        return Example(prompt=prompt, answer=results[-1], target=",".join(results))

    def _minus_choices(self, total: int) -> int:
        """How many numbers may be subtracted from ``total``."""
        return min(total, self._limit - 1) + 1 if self.nonnegative else self._limit

    def _draw(self, rng: random.Random) -> Example:
        terms = rng.randint(self.min_terms, self.max_terms)
        first = rng.randrange(self._limit)
        total, steps = first, []
        for _ in range(terms - 1):
            pick = rng.randrange(self._limit + self._minus_choices(total))
            if pick < self._limit:
                steps.append(("+", pick))
                total += pick
            else:
                steps.append(("-", pick - self._limit))
                total -= pick - self._limit
        return self._example(first, steps)

    def _enumerate(self) -> Iterator[Example]:
        def extend(first: int, total: int, steps: list[tuple[str, int]]) -> Iterator[Example]:
            if len(steps) + 1 >= self.min_terms:
                yield self._example(first, steps)
            if len(steps) + 1 == self.max_terms:
                return
            for number in range(self._limit):
                yield from extend(first, total + number, steps + [("+", number)])
            for number in range(self._minus_choices(total)):
                yield from extend(first, total - number, steps + [("-", number)])

        for first in range(self._limit):
            yield from extend(first, first, [])

    def _distinct_prompts(self, at_least: int) -> int:
        terms = range(self.min_terms, self.max_terms + 1)
        if not self.nonnegative:
            return sum(self._limit**k * 2 ** (k - 1) for k in terms)
        all_plus = sum(self._limit**k for k in terms)  # a lower bound, cheap
        if all_plus > at_least:
            return all_plus
        # Exact count by dynamic programming over the running total (only for small spaces).
        count, totals = 0, {first: 1 for first in range(self._limit)}
        for k in range(2, self.max_terms + 1):
            following: dict[int, int] = defaultdict(int)
            for total, ways in totals.items():
                for number in range(self._limit):
                    following[total + number] += ways
                for number in range(self._minus_choices(total)):
                    following[total - number] += ways
            totals = following
            if k >= self.min_terms:
                count += sum(totals.values())
        return count

    # -- verification -----------------------------------------------------------------------

    def extract_answer(self, completion: str) -> str | None:
        """The last comma-separated piece when it is an integer, else None."""
        last = completion.rsplit(",", 1)[-1]
        return last if _INTEGER.fullmatch(last) else None

    def step_rewards(self, example: Example, completion: str, finished: bool) -> list[StepReward]:
        """1.0 for each comma-separated piece equal to the running result of its step, else 0.0.

        ``end`` is the index of the piece's last character; an empty piece ends at the comma
        after it (or at the last character of the completion). Pieces beyond the number of
        steps get 0.0. An empty completion has no steps. ``finished`` does not matter here:
        the outcome reward already requires it.
        """
        if not completion:
            return []
        expected = example.target.split(",")
        rewards, start = [], 0
        for j, piece in enumerate(completion.split(",")):
            end = start + len(piece) - 1 if piece else min(start, len(completion) - 1)
            correct = j < len(expected) and piece == expected[j]
            rewards.append(StepReward(end=end, reward=1.0 if correct else 0.0))
            start += len(piece) + 1
        return rewards
