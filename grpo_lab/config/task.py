"""The task section of the config: which task, its data, its prompts and answers, and the reward
functions a run trains on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from grpo_lab.config.fields import _check, _choice, _positive, knob

DATA_TASKS = ("gsm8k", "dataset")  # the tasks that read local data
DATA_KEYS = ("columns", "template", "train_split", "eval_split", "subset", "extractor", "pattern", "compare",
             "tolerance", "chat", "system_prompt", "ascii")  # task keys only the data tasks read


@dataclass(frozen=True)
class TaskConfig:
    name: str = knob("chain", "task: chain | addition | gsm8k | dataset | a task of your own by import path "
                              "(my_pkg.tasks:MyTask)")
    data_seed: int = knob(0, "fixes the train/eval split and prompts; shared by every run seed")
    digits: int = knob(1, "digits per number (chain, addition)")
    min_terms: int = knob(3, "chain: fewest terms")
    max_terms: int = knob(5, "chain: most terms")
    train_size: int = knob(20000, "training prompts generated (gsm8k, dataset: at most this many rows, a seeded subset)")
    eval_size: int = knob(512, "held-out prompts generated (gsm8k, dataset: at most this many rows)")
    path: Optional[str] = knob(None, "gsm8k, dataset: a local jsonl/json/csv/parquet file, a save_to_disk folder, a "
                                     "folder of split files, or a dataset name in the local Hugging Face cache")
    columns: Optional[dict] = knob(None, "dataset: {prompt: column, answer: column, target: column, <alias>: column}; "
                                         "None = columns prompt and answer (gsm8k: question and answer)", added=True)
    template: Optional[str] = knob(None, "gsm8k, dataset: the prompt as a format string over the columns, e.g. "
                                         "'Q: {question}\\nA:'; None = the prompt column (gsm8k: "
                                         "'Question: {question}\\nAnswer:')", added=True)
    train_split: str = knob("train", "gsm8k, dataset: the split (file stem) of the training rows", added=True)
    eval_split: str = knob("test", "gsm8k, dataset: the split of the held-out rows; with one split only, "
                                   "task.eval_size rows are held out by task.data_seed", added=True)
    subset: Optional[str] = knob(None, "gsm8k, dataset: the dataset's config (sub-folder); None = default "
                                       "(gsm8k: main)", added=True)
    extractor: Optional[str] = knob(None, "gsm8k, dataset: the answer extractor: auto | hash (####) | boxed | "
                                          "answer_is | last_number | regex | text | gsm8k | an import path; "
                                          "None = auto (gsm8k: gsm8k)", added=True)
    pattern: Optional[str] = knob(None, "extractor regex: the answer is the last match (its first group)", added=True)
    compare: str = knob("exact", "gsm8k, dataset: exact | numeric (|a - b| <= tolerance * max(1, |b|))", added=True)
    tolerance: float = knob(1e-6, "numeric comparison's relative tolerance", added=True)
    chat: bool = knob(False, "gsm8k, dataset: prompts through the chat template of model.path's tokenizer",
                      added=True)
    system_prompt: Optional[str] = knob(None, "chat: the system message before each prompt", added=True)
    ascii: Optional[bool] = knob(None, "gsm8k, dataset: map text onto ASCII; None = only gsm8k with the character "
                                       "tokenizer (no model.path)", added=True)
    kwargs: Optional[dict] = knob(None, "keyword options of a task of your own (or options of a built-in task the "
                                        "keys above do not cover)", added=True)
    rewards: Optional[list] = knob(None, "reward functions summed with weights: [{fn: correct, weight: 1.0}, "
                                         "{fn: my_pkg.rewards:format_ok, weight: 0.5}, ...], fn a built-in (correct, "
                                         "format, length_penalty) or an import path; None = the task's verifier",
                                   added=True)

    def __post_init__(self):
        _positive("task.digits", self.digits)
        _check(2 <= self.min_terms <= self.max_terms,
               f"task.min_terms={self.min_terms}, task.max_terms={self.max_terms}; need 2 <= min_terms <= max_terms")
        _positive("task.train_size", self.train_size)
        _positive("task.eval_size", self.eval_size)
        _check(self.name != "gsm8k" or self.path is not None,
               "task.name is gsm8k but task.path is not set; set task.path to a local GSM8K jsonl/parquet file")
        _check(self.name != "dataset" or self.path is not None,
               "task.name is dataset but task.path is not set; set task.path to a local jsonl/json/csv/parquet "
               "file, a save_to_disk folder or a cached dataset name")
        if self.name not in DATA_TASKS:
            defaults = TaskConfig.__dataclass_fields__
            for key in DATA_KEYS:
                _check(getattr(self, key) == defaults[key].default,
                       f"task.{key} is set but task {self.name} reads no data; it applies to the gsm8k and dataset "
                       "tasks" + (", a task of your own takes options from task.kwargs" if ":" in self.name else ""))
        _choice("task.compare", self.compare, ("exact", "numeric"))
        _positive("task.tolerance", self.tolerance, zero_ok=True)
        _check(self.pattern is None or self.extractor == "regex",
               f"task.pattern is set but task.extractor is {self.extractor!r}; set task.extractor: regex to use it")
        _check(self.system_prompt is None or self.chat,
               "task.system_prompt is set but task.chat is false; the system prompt goes through the chat template, "
               "set task.chat: true")
        for key in ("columns", "kwargs"):
            value = getattr(self, key)
            _check(value is None or isinstance(value, dict), f"task.{key} must be a mapping, got {value!r}")
        _check(self.rewards is None or (isinstance(self.rewards, list) and self.rewards),
               f"task.rewards must be a list of {{fn: ..., weight: ...}} items, got {self.rewards!r}")

    def options(self) -> dict:
        """The keyword options `grpo_lab.tasks.build_task` takes for this task (those a run adds from
        the model, the chat template and the ASCII mapping, aside)."""
        if self.name == "chain":
            out = dict(digits=self.digits, min_terms=self.min_terms, max_terms=self.max_terms,
                       train_size=self.train_size, eval_size=self.eval_size)
        elif self.name == "addition":
            out = dict(digits=self.digits, train_size=self.train_size, eval_size=self.eval_size)
        elif self.name in DATA_TASKS:
            out = dict(path=self.path, train_size=self.train_size, eval_size=self.eval_size)
            defaults = TaskConfig.__dataclass_fields__
            out.update({key: getattr(self, key) for key in DATA_KEYS
                        if key not in ("chat", "ascii") and getattr(self, key) != defaults[key].default})
        else:  # a task of one's own: its options are task.kwargs
            out = {}
        return {**out, **(self.kwargs or {})}
