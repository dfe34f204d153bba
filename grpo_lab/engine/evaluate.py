"""Evaluation on held-out prompts: greedy accuracy, and k samples per prompt at the evaluation
temperature (accuracy = pass@1, pass@k, maj@k, lengths of correct and wrong completions, entropy).

Sampled evaluation draws from its own generator, seeded by the run seed alone, so evaluating
changes nothing in training and every evaluation of a run sees the same draws.
"""

from __future__ import annotations

import numpy as np
import torch

from grpo_lab.evaluation import summarize
from grpo_lab.seeding import Stream, generator


@torch.no_grad()
def evaluate(engine, examples: list, *, samples: int, chunk: int = 64) -> dict:
    """`eval/...` metrics of `engine`'s policy on `examples`, `samples` completions per prompt."""
    cfg = engine.config.train
    gen = generator(engine.config.seed, Stream.EVALUATION)
    correct, answers, lengths, greedy, entropy_sum, entropy_tokens = [], [], [], [], 0.0, 0.0
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
    return summarize(np.concatenate(correct), answers, [ex.answer for ex in examples], np.concatenate(lengths),
                     np.array(greedy), entropy_sum / max(entropy_tokens, 1.0))
