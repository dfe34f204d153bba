"""Evaluation on held-out prompts: greedy accuracy, and k samples per prompt at the evaluation
temperature (accuracy = pass@1, pass@k, maj@k, lengths of correct and wrong completions, entropy).

Sampled evaluation draws from its own generator, seeded by the run seed alone, so evaluating
changes nothing in training and every evaluation of a run sees the same draws. The completions
table (`train.eval_table` rows) is read off the samples already drawn: it draws nothing.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from grpo_lab.evaluation import summarize
from grpo_lab.seeding import Stream, generator


@torch.no_grad()
def evaluate(engine, examples: list, *, samples: int, chunk: int = 64, table: Optional[list] = None,
             table_rows: int = 0) -> dict:
    """`eval/...` metrics of `engine`'s policy on `examples`, `samples` completions per prompt; with
    the config's reward functions also `eval/reward/<name>`, each one's mean over the samples.

    `table`, where given, receives up to `table_rows` rows (dicts) of sampled completions: the first
    sample of each prompt, then the second, ...: prompt, completion, finished, reference answer,
    extracted answer, correct, reward and each reward function's value."""
    cfg = engine.config.train
    gen = generator(engine.config.seed, Stream.EVALUATION)
    correct, answers, lengths, greedy, entropy_sum, entropy_tokens = [], [], [], [], 0.0, 0.0
    parts: dict[str, list] = {}
    candidates = []  # (sample index, prompt index, row) for the table
    for i in range(0, len(examples), chunk):
        part = examples[i: i + chunk]
        g = engine.score(engine.generate(part, group_size=1, greedy=True), part, 1)
        greedy.extend(g.correct.tolist())
        ro = engine.generate(part, group_size=samples, temperature=cfg.eval_temperature, generator=gen,
                             with_entropy=True)
        s = engine.score(ro, part, samples)
        correct.append(s.correct.view(len(part), samples).cpu().numpy())
        lengths.append(ro.lengths.view(len(part), samples).cpu().numpy())
        answers.extend([engine.task.extract_answer(t) if f else None for t, f in
                        zip(s.texts[j * samples:(j + 1) * samples], ro.finished[j * samples:(j + 1) * samples].tolist())]
                       for j in range(len(part)))
        entropy_sum += float(ro.entropy.sum())
        entropy_tokens += float(ro.completion_mask.sum())
        for name, values in (s.reward_parts or {}).items():
            parts.setdefault(name, []).extend(values.tolist())
        if table is not None and i < table_rows:
            candidates += [(row % samples, i + row // samples, table_row(engine, s, row))
                           for row in range(min(len(part), table_rows) * samples)]
    metrics = summarize(np.concatenate(correct), answers, [ex.answer for ex in examples], np.concatenate(lengths),
                        np.array(greedy), entropy_sum / max(entropy_tokens, 1.0))
    metrics.update({f"eval/reward/{name}": float(np.mean(values)) for name, values in parts.items()})
    if table is not None:
        table.extend(row for _, _, row in sorted(candidates, key=lambda c: c[:2])[:table_rows])
    return metrics


def table_row(engine, batch, row: int) -> dict:
    """One sampled completion as a row of the completions table."""
    example, text = batch.examples[row], batch.texts[row]
    finished = bool(batch.rollout.finished[row])
    out = {"prompt": example.prompt, "completion": text, "finished": finished, "answer": example.answer,
           "extracted": engine.task.extract_answer(text), "correct": bool(batch.correct[row]),
           "reward": float(batch.rewards[row])}
    out.update({f"reward/{name}": float(values[row]) for name, values in (batch.reward_parts or {}).items()})
    return out
