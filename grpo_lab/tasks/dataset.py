"""The `dataset` task: prompts and reference answers from the rows of local data (`tasks.data`
says what ``path`` may be).

Each row becomes an `Example`:

- ``columns`` maps grpo_lab's names to the data's columns: ``prompt`` (default column ``prompt``),
  ``answer`` (default ``answer``), ``target`` (the reference completion the SFT warm start trains
  on; default: the answer column's text); any other name is an alias, ``difficulty: level``, for a
  field rewards read as ``example.fields["difficulty"]``. Every column of the row is in
  ``example.fields`` as well.
- ``template`` is a format string over the row's columns and aliases (``"Question: {question}\\n
  Answer:"``); without one the prompt column is the prompt.
- with ``chat_template`` (a function of a message list, given by the run from the model's
  tokenizer) the prompt is the user's message of a chat, after ``system_prompt`` where given, with
  the assistant's turn opened.
- the reference answer is the answer column passed through the extractor (``####``, ``\\boxed{}``,
  ...; see `tasks.answers`), or the whole of it where the extractor finds nothing (a bare ``72``).
- text is kept as it is; ``ascii=True`` maps it onto printable ASCII (the GSM8K preset does so for
  the character tokenizer). The alphabet (the character tokenizer's vocabulary) is printable ASCII
  plus every character of the data.

Train and eval sets: the ``train_split`` and ``eval_split`` of the data where both exist, else the
one split is divided by ``seed`` (``eval_size`` rows, default 10%, held out). ``train_size`` and
``eval_size`` cap the sets (a seeded subset); train rows whose prompt is in the eval set are dropped.
``rows`` gives the rows by split, already read (`check_rows_early` reads them without `datasets`).
"""

from __future__ import annotations

import os
import random
import string
import unicodedata
from typing import Any, Callable, Optional, Sequence

from .answers import COMPARISONS, canonical, get_extractor
from .base import Example, TaskError, VerifiableTask, check_int
from .data import load_splits, plain_splits

ALPHABET = "\n" + "".join(chr(code) for code in range(32, 127))
_ASCII_LOOKALIKES = str.maketrans(
    {
        "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-",
        "\u2014": "-", "\u2212": "-", "\u00d7": "*", "\u00f7": "/", "\u2026": "...",
        "\u00a0": " ", "\t": " ", "\r": "", "\u20ac": "EUR", "\u00a3": "GBP",
    }
)
ROLES = ("prompt", "answer", "target")


def to_alphabet(text: str) -> str:
    """Map text onto printable ASCII plus newline: curly quotes -> straight, dashes -> "-", other
    characters -> their closest ASCII form or "?"."""
    text = unicodedata.normalize("NFKD", text.translate(_ASCII_LOOKALIKES))
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return "".join(ch if ch in ALPHABET else "?" for ch in text)


def template_fields(template: str) -> list[str]:
    """The column names a format string reads (``{a}`` and ``{a[0]}`` both read ``a``)."""
    names = []
    for _, name, _, _ in string.Formatter().parse(template):
        if name is not None:
            base = name.split(".")[0].split("[")[0]
            if not base or base.isdigit():
                raise ValueError(f"field {{{name}}} names no column; write {{column_name}}")
            names.append(base)
    return names


class DatasetTask(VerifiableTask):
    """Rows of local data as a task (registered as ``dataset`` in `grpo_lab.tasks`); see the module
    docstring for every option."""

    name = "dataset"
    default_columns: dict[str, str] = {"prompt": "prompt", "answer": "answer"}
    default_template: Optional[str] = None
    default_extractor = "auto"
    default_subset = "default"
    kind = "a .jsonl/.json/.csv/.parquet"  # what a data file is, in messages

    def __init__(
        self,
        *,
        seed: int,
        path: str | os.PathLike[str] | None = None,
        columns: Optional[dict] = None,
        template: Optional[str] = None,
        train_split: str = "train",
        eval_split: str = "test",
        subset: Optional[str] = None,
        train_size: Optional[int] = None,
        eval_size: Optional[int] = None,
        cache_dir: Optional[str] = None,
        extractor: Optional[str] = None,
        pattern: Optional[str] = None,
        compare: str = "exact",
        tolerance: float = 1e-6,
        system_prompt: Optional[str] = None,
        chat_template: Optional[Callable[[list], str]] = None,
        ascii: bool = False,
        rows: Optional[dict] = None,
    ) -> None:
        name = self.name
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TaskError(f"{name}: seed must be an integer, got {seed!r}")
        if path is None:
            raise TaskError(f"{name}: option path is required: {self.kind} file, a folder written by save_to_disk, "
                            "a directory holding train/test files, or a dataset name in the local cache")
        for option, size in (("train_size", train_size), ("eval_size", eval_size)):
            if size is not None:
                check_int(name, option, size, minimum=1)
        if columns is not None and not (isinstance(columns, dict) and all(
                isinstance(k, str) and isinstance(v, str) for k, v in columns.items())):
            raise TaskError(f"{name}: columns must map names to column names, e.g. {{prompt: question, answer: "
                            f"solution}}; got {columns!r}")
        if compare not in COMPARISONS:
            raise TaskError(f"{name}: compare is {compare!r}; choose one of {', '.join(COMPARISONS)}")
        if system_prompt is not None and chat_template is None:
            raise TaskError(f"{name}: a system prompt needs the chat template (task.chat: true)")
        self.columns = {**self.default_columns, **(columns or {})}
        self.template = template if template is not None else self.default_template
        if self.template is not None:
            try:
                self._template_fields = template_fields(self.template)
            except ValueError as exc:
                raise TaskError(f"{name}: template {self.template!r} is not a format string over columns ({exc})") \
                    from None
        self.extractor_name = extractor or self.default_extractor
        self._extract = get_extractor(self.extractor_name, pattern=pattern, error=TaskError)
        self.compare, self.tolerance = compare, tolerance
        self.system_prompt, self.chat_template, self.ascii = system_prompt, chat_template, ascii
        subset = subset or self.default_subset
        self._options = {"path": str(path), "columns": self.columns, "template": self.template,
                         "train_split": train_split, "eval_split": eval_split, "subset": subset,
                         "train_size": train_size, "eval_size": eval_size, "cache_dir": cache_dir,
                         "extractor": self.extractor_name, "pattern": pattern, "compare": compare,
                         "tolerance": tolerance, "system_prompt": system_prompt, "chat": chat_template is not None,
                         "ascii": ascii}
        parts = rows if rows is not None else load_splits(str(path), (train_split, eval_split), subset=subset,
                                                          cache_dir=cache_dir, task=name, kind=self.kind)
        splits = {split: [self.make_example(row, number, source) for source, rows in found
                          for number, row in enumerate(rows, start=1)] for split, found in parts.items()}
        rng = random.Random(seed)
        if len(splits) == 2:
            train, evaluation = splits[train_split], splits[eval_split]
            evaluation = self._subset(evaluation, eval_size, rng)
        else:  # one split (or train_split == eval_split): carve the eval set out of it
            (source,) = splits.values()
            train, evaluation = self._split_one(source, eval_size, rng)
        eval_prompts = {example.prompt for example in evaluation}
        train = [example for example in train if example.prompt not in eval_prompts]
        train = self._subset(train, train_size, rng)
        self._train, self._eval = tuple(train), tuple(evaluation)
        self.alphabet = self._alphabet()

    # ----- rows -> examples ---------------------------------------------------------------------
    def values(self, row: dict, number: int, source: str) -> dict[str, Any]:
        """The row's columns plus every name of the column map (`columns`) bound to its column."""
        values = dict(row)
        for role, column in self.columns.items():
            if column in row:
                values[role] = row[column]
            elif role != "prompt" or self.template is None:
                raise TaskError(f"{self.name}: row {number} of {source} has no column {column!r} (task.columns."
                                f"{role}); its columns: {', '.join(map(str, row))}")
        return values

    def render(self, values: dict, number: int, source: str) -> str:
        """The prompt text of a row: the template over its values, or the prompt column."""
        if self.template is None:
            return str(values["prompt"])
        missing = [f for f in self._template_fields if f not in values]
        if missing:
            raise TaskError(f"{self.name}: task.template names column {missing[0]!r}, which row {number} of {source} "
                            f"does not have; its columns: {', '.join(map(str, values))}")
        try:
            return self.template.format(**values)
        except (IndexError, KeyError, ValueError, AttributeError) as exc:
            raise TaskError(f"{self.name}: task.template {self.template!r} cannot be filled from row {number} of "
                            f"{source} ({type(exc).__name__}: {exc})") from None

    def chat(self, text: str) -> str:
        """The prompt as the model sees it: the chat template around the user's message, if any."""
        if self.chat_template is None:
            return text
        messages = ([{"role": "system", "content": self.system_prompt}] if self.system_prompt else [])
        return self.chat_template(messages + [{"role": "user", "content": text}])

    def text(self, value: Any) -> str:
        text = "" if value is None else str(value)
        return to_alphabet(text) if self.ascii else text

    def make_example(self, row: dict, number: int, source: str) -> Example:
        values = self.values(row, number, source)
        reference, column = values["answer"], self.columns["answer"]
        if reference is None:
            raise TaskError(f"{self.name}: row {number} of {source} has no answer: its {column!r} is null or missing "
                            "(task.columns.answer); give every row one")
        answer = self._extract(str(reference))
        if answer is None:
            answer = canonical(self.text(reference))
        if answer is None:
            raise TaskError(f"{self.name}: row {number} of {source} has an empty answer ({column!r} is "
                            f"{str(reference)!r}); give every row one")
        target = values["target"] if "target" in self.columns else reference
        return Example(prompt=self.chat(self.text(self.render(values, number, source))), answer=answer,
                       target=self.text(target).strip(), fields=values)

    # ----- the verifier ------------------------------------------------------------------------
    def extract_answer(self, completion: str) -> str | None:
        return self._extract(completion)

    def is_correct(self, example: Example, completion: str, finished: bool) -> bool:
        if not finished:
            return False
        answer = self.extract_answer(completion)
        return answer is not None and COMPARISONS[self.compare](answer, example.answer, self.tolerance)

    # ----- sets --------------------------------------------------------------------------------
    def _alphabet(self) -> str:
        if self.ascii:
            return ALPHABET
        seen = set(ALPHABET)
        for example in (*self._train, *self._eval):
            seen.update(example.prompt, example.target, example.answer)
        return ALPHABET + "".join(sorted(seen - set(ALPHABET)))

    def _split_one(self, examples: list[Example], eval_size: int | None,
                   rng: random.Random) -> tuple[list[Example], list[Example]]:
        if eval_size is None:
            eval_size = max(1, round(0.1 * len(examples)))
        if eval_size >= len(examples):
            raise TaskError(f"{self.name}: eval_size {eval_size} leaves no training rows out of {len(examples)}; "
                            "lower eval_size (task.eval_size) or provide separate train and eval files")
        order = list(range(len(examples)))
        rng.shuffle(order)
        return [examples[i] for i in sorted(order[eval_size:])], [examples[i] for i in sorted(order[:eval_size])]

    @staticmethod
    def _subset(examples: Sequence[Example], size: int | None, rng: random.Random) -> list[Example]:
        """A seeded subset of ``size`` examples in their order, or all of them when there are no more."""
        if size is None or size > len(examples):
            return list(examples)
        return [examples[i] for i in sorted(rng.sample(range(len(examples)), size))]


def check_rows_early(name: str, *, seed: int, options: dict) -> bool:
    """Build the data task ``name`` (``dataset``, ``gsm8k`` or a subclass) from its rows read with the
    standard library (`tasks.data.plain_splits`), so that a row it refuses (a missing column, an empty
    answer, a template it cannot fill) or a split it cannot make stops a run before torch and
    `datasets` load. The chat template is left out (it needs the model's tokenizer). Returns whether
    the rows could be read so: False for parquet, save_to_disk folders, the Hugging Face cache and any
    task that is not a data task; those are checked when the task is built."""
    from .base import task_factory

    cls = task_factory(name)
    if not (isinstance(cls, type) and issubclass(cls, DatasetTask)) or options.get("path") is None:
        return False
    splits = (options.get("train_split", "train"), options.get("eval_split", "test"))
    rows = plain_splits(str(options["path"]), splits, subset=options.get("subset") or cls.default_subset)
    if rows is None:
        return False
    cls(seed=seed, rows=rows, **{key: value for key, value in options.items() if key != "system_prompt"})
    return True
