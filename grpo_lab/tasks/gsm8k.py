"""GSM8K-format math word problems, loaded from local files or the local Hugging Face cache.

Rows hold ``question`` and ``answer``; the answer is a rationale ending in ``#### <number>``.
An example is::

    prompt  "Question: <question>\\nAnswer:"
    target  " <rationale>\\nThe answer is <number>"
    answer  "<number>"   (thousands commas and "$" removed, "7.50" -> "7.5", "007" -> "7")

``path`` may be a ``.jsonl``/``.json``/``.parquet`` file, a directory holding one file (or
shards) per split (``train.jsonl``, ``test.parquet``, or the hub layout
``main/train-00000-of-00001.parquet``), or a dataset name such as ``openai/gsm8k`` that is
already in the local Hugging Face cache. Nothing is ever downloaded. When only one split
exists, it is split by ``seed`` into disjoint train and eval sets.

Text is mapped onto printable ASCII plus newline (curly quotes -> straight, dashes -> "-",
other characters -> their closest ASCII form or "?") so a character tokenizer covers it.
"""

from __future__ import annotations

import os
import random
import re
import unicodedata
from contextlib import contextmanager
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Iterator, Sequence

from .base import Example, TaskError, VerifiableTask, check_int, register_task

ALPHABET = "\n" + "".join(chr(code) for code in range(32, 127))
SUFFIXES = (".jsonl", ".json", ".parquet")
PROMPT_FORMAT = "Question: {question}\nAnswer:"
ANSWER_FORMAT = "The answer is {answer}"

_NUMBER = re.compile(r"(?<!\d)-?\$?\d[\d,]*(?:\.\d+)?")
_ANSWER_IS = re.compile(r"answer is:?\s*(" + _NUMBER.pattern + ")", re.IGNORECASE)
_HUB_NAME = re.compile(r"[\w.-]+(/[\w.-]+)?")
_ASCII_LOOKALIKES = str.maketrans(
    {
        "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-",
        "\u2014": "-", "\u2212": "-", "\u00d7": "*", "\u00f7": "/", "\u2026": "...",
        "\u00a0": " ", "\t": " ", "\r": "", "\u20ac": "EUR", "\u00a3": "GBP",
    }
)


def normalize_number(text: str) -> str | None:
    """Canonical form of a number written as text, or None when it is not one.

    Thousands commas, "$" and a trailing "." are dropped; ``"1,000"`` -> ``"1000"``,
    ``"7.50"`` -> ``"7.5"``, ``"3.0"`` -> ``"3"``.
    """
    cleaned = text.strip().replace(",", "").replace("$", "").rstrip(".")
    if not re.fullmatch(r"-?\d+(?:\.\d+)?", cleaned):
        return None
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def to_alphabet(text: str) -> str:
    """Map text onto printable ASCII plus newline (see the module docstring)."""
    text = unicodedata.normalize("NFKD", text.translate(_ASCII_LOOKALIKES))
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return "".join(ch if ch in ALPHABET else "?" for ch in text)


@register_task("gsm8k")
class GSM8KTask(VerifiableTask):
    """GSM8K-format data; see the module docstring for the formats and the layout of ``path``.

    Options: ``path`` (required), ``train_split``/``eval_split`` (file stems or dataset
    splits, default ``train``/``test``), ``subset`` (the sub-directory or dataset config,
    default ``main``), ``train_size``/``eval_size`` (seeded subsets; None keeps every row,
    except that an eval set carved out of a single split defaults to 10% of its rows),
    ``cache_dir`` (the Hugging Face hub cache to look in for a dataset name).
    Train rows whose prompt also appears in the eval set are dropped.
    """

    name = "gsm8k"
    alphabet = ALPHABET

    def __init__(
        self,
        *,
        seed: int,
        path: str | os.PathLike[str] | None = None,
        train_split: str = "train",
        eval_split: str = "test",
        subset: str = "main",
        train_size: int | None = None,
        eval_size: int | None = None,
        cache_dir: str | None = None,
    ) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TaskError(f"gsm8k: seed must be an integer, got {seed!r}")
        if path is None:
            raise TaskError(
                "gsm8k: option path is required: a GSM8K-format .jsonl/.json/.parquet file, "
                "a directory holding train/test files, or a dataset name in the local cache"
            )
        if train_size is not None:
            check_int(self.name, "train_size", train_size, minimum=1)
        if eval_size is not None:
            check_int(self.name, "eval_size", eval_size, minimum=1)
        self._options = {
            "path": str(path),
            "train_split": train_split,
            "eval_split": eval_split,
            "subset": subset,
            "train_size": train_size,
            "eval_size": eval_size,
            "cache_dir": cache_dir,
        }
        splits = _load_splits(str(path), train_split, eval_split, subset, cache_dir)
        rng = random.Random(seed)
        if len(splits) == 2:
            train, evaluation = splits[train_split], splits[eval_split]
            if eval_size is not None:
                evaluation = _subset(evaluation, eval_size, rng, "eval_size", eval_split)
        else:  # one split (or train_split == eval_split): carve the eval set out of it
            (source,) = splits.values()
            train, evaluation = _split_one(source, eval_size, rng)
        eval_prompts = {example.prompt for example in evaluation}
        train = [example for example in train if example.prompt not in eval_prompts]
        if train_size is not None:
            train = _subset(train, train_size, rng, "train_size", train_split)
        self._train, self._eval = tuple(train), tuple(evaluation)

    def extract_answer(self, completion: str) -> str | None:
        """The number after the last ``####``; else after the last "answer is"; else the last
        number in the text; None when there is no number."""
        if "####" in completion:
            match = _NUMBER.search(completion.rsplit("####", 1)[1])
            return normalize_number(match.group()) if match else None
        stated = _ANSWER_IS.findall(completion)
        if stated:
            return normalize_number(stated[-1])
        numbers = _NUMBER.findall(completion)
        return normalize_number(numbers[-1]) if numbers else None


def parse_rows(rows: Sequence[dict[str, Any]], source: str) -> list[Example]:
    """GSM8K rows -> examples; ``source`` names the file in errors. Rows count from 1."""
    examples = []
    for number, row in enumerate(rows, start=1):
        for key in ("question", "answer"):
            value = row.get(key)
            if not isinstance(value, str) or not value.strip():
                raise TaskError(
                    f"gsm8k: row {number} of {source} has no {key!r} field; each row needs "
                    f"non-empty 'question' and 'answer' strings"
                )
        if "####" not in row["answer"]:
            raise TaskError(
                f"gsm8k: row {number} of {source} has no '####' final answer; each answer "
                f"must end with '#### <number>'"
            )
        rationale, final = row["answer"].rsplit("####", 1)
        answer = normalize_number(final)
        if answer is None:
            raise TaskError(
                f"gsm8k: row {number} of {source} has final answer {final.strip()!r} after "
                f"'####', which is not a number; each answer must end with '#### <number>'"
            )
        rationale = to_alphabet(rationale.strip())
        ending = ANSWER_FORMAT.format(answer=answer)
        examples.append(
            Example(
                prompt=PROMPT_FORMAT.format(question=to_alphabet(row["question"].strip())),
                answer=answer,
                target=f" {rationale}\n{ending}" if rationale else f" {ending}",
            )
        )
    return examples


def _split_one(
    examples: list[Example], eval_size: int | None, rng: random.Random
) -> tuple[list[Example], list[Example]]:
    if eval_size is None:
        eval_size = max(1, round(0.1 * len(examples)))
    if eval_size >= len(examples):
        raise TaskError(
            f"gsm8k: eval_size {eval_size} leaves no training rows out of {len(examples)}; "
            f"lower eval_size or provide separate train and eval files"
        )
    order = list(range(len(examples)))
    rng.shuffle(order)
    held_out = sorted(order[:eval_size])
    kept = sorted(order[eval_size:])
    return [examples[i] for i in kept], [examples[i] for i in held_out]


def _subset(
    examples: list[Example], size: int, rng: random.Random, option: str, split: str
) -> list[Example]:
    if size > len(examples):
        raise TaskError(
            f"gsm8k: {option} {size} exceeds the {len(examples)} rows of split {split!r}"
        )
    return [examples[i] for i in sorted(rng.sample(range(len(examples)), size))]


# -- finding and reading the data --------------------------------------------------------------


def _load_splits(
    path: str, train_split: str, eval_split: str, subset: str, cache_dir: str | None
) -> dict[str, list[Example]]:
    """Examples per split name, holding ``train_split``, ``eval_split`` or both."""
    location = Path(path).expanduser()
    if not location.exists() and _HUB_NAME.fullmatch(path) and not path.endswith(SUFFIXES):
        snapshot = _hub_snapshot(path, cache_dir)
        if snapshot is not None:
            location = snapshot
        else:
            cached = _datasets_cache(path, subset, (train_split, eval_split))
            if cached is not None:
                return cached
            raise TaskError(
                f"gsm8k: path {path!r} does not exist, and no dataset of that name is in the "
                f"local Hugging Face cache; give a .jsonl/.json/.parquet file, a directory "
                f"with {train_split}/{eval_split} files, or a dataset name downloaded before "
                f"(nothing is fetched from the network)"
            )
    if not location.exists():
        raise TaskError(
            f"gsm8k: path {str(location)!r} does not exist; set option path to a "
            f"GSM8K-format .jsonl/.json/.parquet file or a directory holding "
            f"{train_split}/{eval_split} files"
        )
    if location.is_file():
        if location.suffix not in SUFFIXES:
            raise TaskError(
                f"gsm8k: cannot read {location}: expected one of {', '.join(SUFFIXES)}"
            )
        return {train_split: _read_files([location])}
    splits = {}
    for split in (train_split, eval_split):
        files = _split_files(location, split, subset)
        if files:
            splits[split] = _read_files(files)
    if not splits:
        raise TaskError(
            f"gsm8k: directory {location} holds no {train_split!r} or {eval_split!r} files; "
            f"expected e.g. {train_split}.jsonl and {eval_split}.jsonl (or .json/.parquet, "
            f"or {subset}/{train_split}-00000-of-00001.parquet)"
        )
    return splits


def _split_files(directory: Path, split: str, subset: str) -> list[Path]:
    """Files of one split: ``<split>.<ext>`` or shards ``<split>-*.<ext>``, in ``directory``
    or else in ``directory/<subset>``."""
    for folder in (directory, directory / subset):
        if not folder.is_dir():
            continue
        files = sorted(
            file
            for file in folder.iterdir()
            if file.is_file()
            and file.suffix in SUFFIXES
            and (file.stem == split or file.stem.startswith(split + "-"))
        )
        if files:
            return files
    return []


def _read_files(files: list[Path]) -> list[Example]:
    import datasets

    examples = []
    for file in files:
        builder = "parquet" if file.suffix == ".parquet" else "json"
        try:
            rows = datasets.load_dataset(builder, data_files=str(file), split="train")
        except Exception as error:  # datasets wraps parse errors in several exception types
            raise TaskError(f"gsm8k: could not read {file}: {error}") from error
        examples += parse_rows(rows.to_list(), str(file))
    return examples


def _hub_snapshot(name: str, cache_dir: str | None) -> Path | None:
    """The local snapshot of a hub dataset repository, or None when it is not cached."""
    try:
        from huggingface_hub import snapshot_download

        folder = snapshot_download(
            name, repo_type="dataset", local_files_only=True, cache_dir=cache_dir
        )
    except Exception:  # not cached, or no huggingface_hub: either way, not available offline
        return None
    return Path(folder)


@contextmanager
def _offline() -> Iterator[None]:
    """HF_DATASETS_OFFLINE=1 semantics for one call: both libraries read these flags at import
    time, so the environment variable alone would come too late."""
    import datasets
    import huggingface_hub.constants as hub_constants

    flags = [
        (datasets.config, "HF_HUB_OFFLINE"),
        (datasets.config, "HF_DATASETS_OFFLINE"),
        (hub_constants, "HF_HUB_OFFLINE"),
    ]
    saved = [(module, flag, getattr(module, flag)) for module, flag in flags
             if hasattr(module, flag)]
    for module, flag, _ in saved:
        setattr(module, flag, True)
    try:
        yield
    finally:
        for module, flag, value in saved:
            setattr(module, flag, value)


def _datasets_cache(
    name: str, subset: str, splits: tuple[str, ...]
) -> dict[str, list[Example]] | None:
    """Splits of a dataset prepared earlier in the ``datasets`` cache, or None."""
    import datasets

    try:
        with _offline():
            loaded = datasets.load_dataset(name, subset)
    except Exception:  # not cached (or cached under another config): report as missing
        return None
    found = {
        split: parse_rows(loaded[split].to_list(), f"{name} ({split} split)")
        for split in splits
        if split in loaded
    }
    return found or None
