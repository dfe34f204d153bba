"""GSM8K-format math word problems: a preset of the `dataset` task (`tasks.dataset`, `tasks.data`).

Rows hold ``question`` and ``answer``; the answer is a rationale ending in ``#### <number>``.
An example is::

    prompt  "Question: <question>\\nAnswer:"
    target  " <rationale>\\nThe answer is <number>"
    answer  "<number>"   (thousands commas and "$" removed, "7.50" -> "7.5", "007" -> "7")

``path`` is what the `dataset` task reads (a file, a save_to_disk folder, a directory holding one
file or shards per split such as ``main/train-00000-of-00001.parquet``, or a dataset name such as
``openai/gsm8k`` already in the local Hugging Face cache). Nothing is ever downloaded. When only
one split exists, it is split by ``seed`` into disjoint train and eval sets.

With ``ascii=True`` (the default here, and what a run with the character tokenizer uses) text is
mapped onto printable ASCII plus newline (curly quotes -> straight, dashes -> "-", other characters
-> their closest ASCII form or "?") so the character tokenizer covers it; a run with a real
tokenizer (``model.path``) keeps the text as it is. Every other option of `dataset` applies
(``columns``, ``template``, ``compare``, the chat template, ...).
"""

from __future__ import annotations

from typing import Any

from .answers import gsm8k_answer, normalize_number
from .base import Example, TaskError, register_task
from .dataset import ALPHABET, DatasetTask, to_alphabet

PROMPT_FORMAT = "Question: {question}\nAnswer:"
ANSWER_FORMAT = "The answer is {answer}"

__all__ = ["ALPHABET", "ANSWER_FORMAT", "GSM8KTask", "PROMPT_FORMAT", "normalize_number", "to_alphabet"]


@register_task("gsm8k")
class GSM8KTask(DatasetTask):
    """GSM8K-format data; see the module docstring for the formats and the layout of ``path``.

    Options: those of `dataset`, with GSM8K's defaults: columns ``question``/``answer``, the
    template above, the ``gsm8k`` answer extractor, ``subset`` ``main`` and ``ascii=True``.
    ``train_size``/``eval_size`` take seeded subsets (None keeps every row, except that an eval set
    carved out of a single split defaults to 10% of its rows). Train rows whose prompt also
    appears in the eval set are dropped.
    """

    name = "gsm8k"
    default_columns = {"prompt": "question", "answer": "answer"}
    default_template = PROMPT_FORMAT
    default_extractor = "gsm8k"
    default_subset = "main"
    kind = "a GSM8K-format .jsonl/.json/.parquet"

    def __init__(self, *, seed: int, ascii: bool = True, **options: Any) -> None:
        super().__init__(seed=seed, ascii=ascii, **options)

    def make_example(self, row: dict, number: int, source: str) -> Example:
        question, answer = self.columns["prompt"], self.columns["answer"]
        for key in (question, answer):
            value = row.get(key)
            if not isinstance(value, str) or not value.strip():
                problem = f"no {key!r} field" if value is None else f"an empty {key!r} ({value!r})"
                raise TaskError(f"{self.name}: row {number} of {source} has {problem}; each row needs "
                                f"non-empty {question!r} and {answer!r} strings")
        if "####" not in row[answer]:
            raise TaskError(f"{self.name}: row {number} of {source} has no '####' final answer; each answer "
                            f"must end with '#### <number>'")
        rationale, final = row[answer].rsplit("####", 1)
        reference = normalize_number(final)
        if reference is None:
            raise TaskError(f"{self.name}: row {number} of {source} has final answer {final.strip()!r} after "
                            f"'####', which is not a number; each answer must end with '#### <number>'")
        values = self.values(row, number, source)
        values[question] = values["prompt"] = self.text(row[question].strip())
        rationale = self.text(rationale.strip())
        ending = ANSWER_FORMAT.format(answer=reference)
        target = f"{rationale}\n{ending}" if rationale else ending
        space = "" if self.chat_template is not None else " "  # a chat's answer starts its own turn
        return Example(prompt=self.chat(self.render(values, number, source)), answer=reference,
                       target=space + target, fields=values)

    def extract_answer(self, completion: str) -> str | None:
        """The number after the last ``####``; else after the last "answer is"; else the last
        number in the text; None when there is no number."""
        return gsm8k_answer(completion)

