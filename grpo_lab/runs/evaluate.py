"""`grpo-lab eval`: a policy (a run, a checkpoint, an export or any local model, `runs.sources`) on a
task's held-out or training prompts: greedy accuracy, and k samples per prompt at a temperature
(accuracy = pass@1, pass@k, maj@k), each with a 95% bootstrap confidence interval over prompts.

Completions are drawn by the same engine code and the same evaluation generator as a run's own
evaluations, so evaluating a run's final policy with the run's settings gives the run's final
`eval/*` numbers; the greedy accuracy of an export equals the run's exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from grpo_lab.config import ConfigError
from grpo_lab.evaluation import ks_up_to, majority_correct, pass_at_k
from grpo_lab.seeding import Stream, generator

SPLITS = ("eval", "train")


@dataclass
class EvalReport:
    """An evaluation: each metric's value and 95% interval over prompts, and a table of samples."""

    label: str
    split: str
    prompts: int
    samples: int
    temperature: float
    metrics: dict  # "eval/greedy_accuracy" -> value, ...
    intervals: dict  # the same keys -> (low, high)
    table: list = field(default_factory=list)
    run_id: Optional[str] = None  # the MLflow run the evaluation was logged to

    def format(self) -> str:
        lines = [f"{self.label}: {self.prompts} {self.split} prompts, greedy and {self.samples} samples at "
                 f"temperature {self.temperature:g}", "| metric | value | 95% CI over prompts |", "|---|---|---|"]
        for key, value in self.metrics.items():
            low, high = self.intervals.get(key, (float("nan"), float("nan")))
            lines.append(f"| {key} | {value:.4f} | [{low:.4f}, {high:.4f}] |")
        if self.run_id:
            lines.append(f"logged to MLflow run {self.run_id}")
        return "\n".join(lines)


def per_prompt(engine, examples: list, *, samples: int, temperature: float, chunk: int = 64,
               table_rows: int = 0) -> tuple[dict, list]:
    """Per-prompt values (P,) of every metric, and the first `table_rows` rows of samples."""
    from grpo_lab.engine.evaluate import table_row

    gen = generator(engine.config.seed, Stream.EVALUATION)
    greedy, correct, answers, table = [], [], [], []
    for i in range(0, len(examples), chunk):
        part = examples[i: i + chunk]
        g = engine.score(engine.generate(part, group_size=1, greedy=True), part, 1)
        greedy.extend(g.correct.tolist())
        ro = engine.generate(part, group_size=samples, temperature=temperature, generator=gen)
        s = engine.score(ro, part, samples)
        correct.append(s.correct.view(len(part), samples).cpu().numpy())
        finished = ro.finished.tolist()
        answers.extend([engine.task.extract_answer(s.texts[j]) if finished[j] else None
                        for j in range(p * samples, (p + 1) * samples)] for p in range(len(part)))
        table += [table_row(engine, s, row) for row in range(0, len(s.texts), samples)]
    correct = np.concatenate(correct)
    values = {"eval/greedy_accuracy": np.array(greedy, dtype=float), "eval/accuracy": correct.mean(1)}
    references = [ex.answer for ex in examples]
    for k in ks_up_to(samples):
        values[f"eval/pass_at_{k}"] = np.array([pass_at_k(samples, int(c), k) for c in correct.sum(1)])
        if k > 1:
            values[f"eval/maj_at_{k}"] = np.array([float(majority_correct(a[:k], r))
                                                   for a, r in zip(answers, references)])
    return values, table[:table_rows]


def evaluate_source(source, *, split: str = "eval", samples: Optional[int] = None,
                    temperature: Optional[float] = None, prompts: Optional[int] = None, log: bool = True,
                    table_rows: Optional[int] = None, n_resamples: int = 2000) -> EvalReport:
    """Evaluate a `runs.sources.Source`; defaults come from its config (`train.eval_samples`,
    `train.eval_temperature`, `train.eval_prompts`); `prompts=0` takes every prompt of the split."""
    from grpo_lab.analysis.estimators import bootstrap_ci
    from grpo_lab.engine import Engine
    from grpo_lab.runs.task_setup import build_task_of
    from grpo_lab.runs.train import quiet

    if split not in SPLITS:
        raise ConfigError(f"split is {split!r}; choose eval (the held-out prompts) or train")
    config = source.config
    tc = config.train
    samples = samples or tc.eval_samples
    temperature = temperature or tc.eval_temperature
    if samples < 1 or temperature <= 0:
        raise ConfigError(f"samples must be >= 1 and temperature > 0, got {samples} and {temperature}")
    quiet()
    if tc.threads:
        torch.set_num_threads(tc.threads)
    task = build_task_of(config, tokenizer=source.tokenizer if config.task.chat else None)
    examples = list(task.eval_examples() if split == "eval" else task.train_examples())
    count = tc.eval_prompts if prompts is None else prompts
    examples = examples[:count] if count else examples
    if not examples:
        raise ConfigError(f"the {split} split of task {config.task.name} has no prompts")
    engine = Engine(config, source.policy, source.tokenizer, task)
    with torch.no_grad():
        values, table = per_prompt(engine, examples, samples=samples, temperature=temperature,
                                   table_rows=tc.eval_table if table_rows is None else table_rows)
    metrics, intervals = {}, {}
    for key, per in values.items():
        ci = bootstrap_ci(per, "mean", n_resamples=n_resamples, seed=0)
        metrics[key], intervals[key] = float(per.mean()), (ci.low, ci.high)
    report = EvalReport(source.label, split, len(examples), samples, temperature, metrics, intervals, table)
    if log:
        report.run_id = log_report(report, source)
    return report


def log_report(report: EvalReport, source) -> str:
    """The evaluation as an MLflow run of its own in the config's experiment, tagged with what was
    evaluated: metrics and their CI bounds (`..._ci_low`, `..._ci_high`), settings as params, the
    samples table as the artifact `eval/completions.json`."""
    import mlflow

    from grpo_lab.conventions import client
    from grpo_lab.engine.engine import TABLE_FILE
    from grpo_lab.runs.tracking import check_writable

    config = source.config
    uri = config.tracking.resolved_uri
    check_writable(uri)
    store = client(uri)
    experiment = store.get_experiment_by_name(config.tracking.experiment)
    experiment_id = experiment.experiment_id if experiment else store.create_experiment(config.tracking.experiment)
    tags = {"grpo_lab.role": "eval", "grpo_lab.eval_of": str(source.label), "grpo_lab.eval_kind": source.kind}
    if source.run_id:
        tags["grpo_lab.eval_of_run"] = source.run_id
    name = f"eval-{Path(str(source.label)).name}-{report.split}"
    run = store.create_run(experiment_id, run_name=name, tags=tags)
    run_id = run.info.run_id
    for key, value in {"split": report.split, "prompts": report.prompts, "samples": report.samples,
                       "temperature": report.temperature, "task.name": config.task.name}.items():
        store.log_param(run_id, key, value)
    metrics = [mlflow.entities.Metric(key, value, 0, 0) for key, value in report.metrics.items()]
    for key, (low, high) in report.intervals.items():
        metrics += [mlflow.entities.Metric(f"{key}_ci_low", low, 0, 0), mlflow.entities.Metric(f"{key}_ci_high", high, 0, 0)]
    store.log_batch(run_id, metrics=[m for m in metrics if np.isfinite(m.value)])
    if report.table:
        columns = list(dict.fromkeys(k for row in report.table for k in row))
        store.log_table(run_id, data={c: [row.get(c) for row in report.table] for c in columns},
                        artifact_file=TABLE_FILE)
    store.set_terminated(run_id, "FINISHED")
    return run_id
