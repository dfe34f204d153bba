"""Rows of a local data set, by split: what the `dataset` task (and its GSM8K preset) reads.

``path`` may be

- a ``.jsonl``/``.json``/``.csv``/``.parquet`` file (one split: the task carves its eval set out
  of it by seed);
- a folder written by ``datasets``' ``save_to_disk`` (a ``Dataset``, one split, or a
  ``DatasetDict`` of splits);
- a folder holding one file or shards per split (``train.jsonl``, ``test.parquet``, or the hub
  layout ``main/train-00000-of-00001.parquet``);
- the name of a dataset already in the local Hugging Face cache (``openai/gsm8k``), as a hub
  snapshot or as prepared by ``datasets.load_dataset``.

Nothing is ever downloaded. Rows come back as plain dicts, each split as a list of
``(source, rows)`` parts so that errors can name the file and the row.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .base import TaskError

SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
_HUB_NAME = re.compile(r"[\w.-]+(/[\w.-]+)?")

Part = tuple[str, list[dict[str, Any]]]  # (where the rows come from, the rows)


def load_splits(path: str, splits: tuple[str, ...], *, subset: str, cache_dir: str | None,
                task: str, kind: str) -> dict[str, list[Part]]:
    """The rows of each of ``splits`` found at ``path`` (or of the one split a single file holds,
    under the first name in ``splits``). ``task`` and ``kind`` (what a file of the right format
    is, for messages) only word the errors."""
    train_split, eval_split = splits
    location = Path(path).expanduser()
    if not location.exists() and _HUB_NAME.fullmatch(path) and not path.endswith(SUFFIXES):
        snapshot = _hub_snapshot(path, cache_dir)
        if snapshot is not None:
            location = snapshot
        else:
            cached = _datasets_cache(path, subset, splits)
            if cached is not None:
                return cached
            raise TaskError(
                f"{task}: path {path!r} does not exist, and no dataset of that name is in the local Hugging "
                f"Face cache; give {kind} file, a directory with {train_split}/{eval_split} files, or a dataset "
                f"name downloaded before (nothing is fetched from the network)"
            )
    if not location.exists():
        raise TaskError(
            f"{task}: path {str(location)!r} does not exist; set option path to {kind} file or a directory "
            f"holding {train_split}/{eval_split} files"
        )
    if location.is_file():
        if location.suffix not in SUFFIXES:
            raise TaskError(f"{task}: cannot read {location}: expected one of {', '.join(SUFFIXES)}")
        return {train_split: _read_files([location], task)}
    if _saved_dataset(location):
        return _read_saved(location, splits, task)
    found = {}
    for split in splits:
        files = _split_files(location, split, subset)
        if files:
            found[split] = _read_files(files, task)
    if not found:
        raise TaskError(
            f"{task}: directory {location} holds no {train_split!r} or {eval_split!r} files; expected e.g. "
            f"{train_split}.jsonl and {eval_split}.jsonl (or .json/.csv/.parquet, or "
            f"{subset}/{train_split}-00000-of-00001.parquet), or a folder written by save_to_disk"
        )
    return found


PLAIN = (".jsonl", ".json", ".csv")  # what the standard library reads, without `datasets`


class _NotPlain(Exception):
    """Rows that only `datasets` reads (or that it reads differently): no early check of them."""


def plain_splits(path: str, splits: tuple[str, ...], *, subset: str) -> dict[str, list[Part]] | None:
    """The rows `load_splits` would find at ``path``, read with the standard library (json, csv) and
    not with `datasets`, so that a row a task refuses can be reported before torch and `datasets`
    load; None where that is not possible: parquet files, save_to_disk folders, datasets in the
    Hugging Face cache, a path that does not exist, or text the standard library does not parse
    (`load_splits` reports those). A key missing from a JSON row stays missing (`datasets` makes it
    null); a CSV cell is text."""
    location = Path(path).expanduser()
    if not location.exists():
        return None
    try:
        if location.is_file():
            return {splits[0]: [_read_plain(location)]}
        if _saved_dataset(location):
            return None
        found = {split: [_read_plain(file) for file in files] for split in splits
                 if (files := _split_files(location, split, subset))}
    except (_NotPlain, OSError, UnicodeDecodeError, ValueError):
        return None
    return found or None


def _read_plain(file: Path) -> Part:
    import csv
    import json

    if file.suffix not in PLAIN:
        raise _NotPlain(file)
    text = file.read_text(encoding="utf-8")
    if file.suffix == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
    elif file.suffix == ".json" and text.lstrip().startswith("["):
        rows = json.loads(text)
    else:
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    if not all(isinstance(row, dict) for row in rows):
        raise _NotPlain(file)
    return str(file), rows


def _split_files(directory: Path, split: str, subset: str) -> list[Path]:
    """Files of one split: ``<split>.<ext>`` or shards ``<split>-*.<ext>``, in ``directory`` or
    else in ``directory/<subset>``."""
    for folder in (directory, directory / subset):
        if not folder.is_dir():
            continue
        files = sorted(
            file for file in folder.iterdir()
            if file.is_file() and file.suffix in SUFFIXES and (file.stem == split or file.stem.startswith(split + "-"))
        )
        if files:
            return files
    return []


@contextmanager
def _no_progress_bars() -> Iterator[None]:
    """Reading a small file is no job for a progress bar (and one would break a one-line error)."""
    from datasets.utils import logging as datasets_logging

    shown = datasets_logging.is_progress_bar_enabled()
    datasets_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            datasets_logging.enable_progress_bar()


def _read_files(files: list[Path], task: str) -> list[Part]:
    import datasets

    parts = []
    for file in files:
        builder = {".parquet": "parquet", ".csv": "csv"}.get(file.suffix, "json")
        try:
            with _no_progress_bars():
                rows = datasets.load_dataset(builder, data_files=str(file), split="train")
        except Exception as error:  # datasets wraps parse errors in several exception types
            raise TaskError(f"{task}: could not read {file}: {str(error).splitlines()[0] if str(error) else error!r}") \
                from None
        parts.append((str(file), rows.to_list()))
    return parts


def _saved_dataset(folder: Path) -> bool:
    """Whether ``folder`` was written by ``save_to_disk`` (a Dataset or a DatasetDict)."""
    return (folder / "dataset_dict.json").exists() or (folder / "state.json").exists()


def _read_saved(folder: Path, splits: tuple[str, ...], task: str) -> dict[str, list[Part]]:
    import datasets

    try:
        with _no_progress_bars():
            loaded = datasets.load_from_disk(str(folder))
    except Exception as error:
        raise TaskError(f"{task}: could not read the saved dataset {folder}: {str(error).splitlines()[0]}") from None
    if isinstance(loaded, datasets.Dataset):
        return {splits[0]: [(str(folder), loaded.to_list())]}
    found = {split: [(f"{folder} ({split} split)", loaded[split].to_list())] for split in splits if split in loaded}
    if not found:
        raise TaskError(f"{task}: the saved dataset {folder} has splits {', '.join(loaded)}, none of them "
                        f"{splits[0]!r} or {splits[1]!r}; set task.train_split / task.eval_split")
    return found


def _hub_snapshot(name: str, cache_dir: str | None) -> Path | None:
    """The local snapshot of a hub dataset repository, or None when it is not cached."""
    try:
        from huggingface_hub import snapshot_download

        folder = snapshot_download(name, repo_type="dataset", local_files_only=True, cache_dir=cache_dir)
    except Exception:  # not cached, or no huggingface_hub: either way, not available offline
        return None
    return Path(folder)


@contextmanager
def _offline() -> Iterator[None]:
    """HF_DATASETS_OFFLINE=1 semantics for one call: both libraries read these flags at import
    time, so the environment variable alone would come too late."""
    import datasets
    import huggingface_hub.constants as hub_constants

    flags = [(datasets.config, "HF_HUB_OFFLINE"), (datasets.config, "HF_DATASETS_OFFLINE"),
             (hub_constants, "HF_HUB_OFFLINE")]
    saved = [(module, flag, getattr(module, flag)) for module, flag in flags if hasattr(module, flag)]
    for module, flag, _ in saved:
        setattr(module, flag, True)
    try:
        yield
    finally:
        for module, flag, value in saved:
            setattr(module, flag, value)


def _datasets_cache(name: str, subset: str, splits: tuple[str, ...]) -> dict[str, list[Part]] | None:
    """Splits of a dataset prepared earlier in the ``datasets`` cache, or None."""
    import datasets

    try:
        with _offline(), _no_progress_bars():
            loaded = datasets.load_dataset(name, subset)
    except Exception:  # not cached (or cached under another config): report as missing
        return None
    found = {split: [(f"{name} ({split} split)", loaded[split].to_list())] for split in splits if split in loaded}
    return found or None
