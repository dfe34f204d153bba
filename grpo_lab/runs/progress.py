"""What a run prints while it trains: one line that updates in place on a terminal ("grpo step
37/200 | reward 0.71 | ..."), or a plain line every `every_s` seconds when the output is a file or
a pipe (a job log), plus a line at each evaluation. Goes to stderr; results go to stdout."""

from __future__ import annotations

import sys
import time
from typing import Optional

import lightning as L

SHOWN = (("rollout/reward_mean", "reward"), ("rollout/accuracy", "accuracy"), ("actor/loss", "loss"),
         ("actor/grad_norm", "grad norm"), ("critic/value_loss", "value loss"), ("sft_loss", "loss"),
         ("reward_model/loss", "loss"), ("reward_model/accuracy", "pair accuracy"))
SURROGATE = "actor/ratio_mean"  # logged by the policy-gradient objectives (the clipped surrogate, CISPO)


def shown(metrics: dict) -> list[tuple[str, str]]:
    """The (key, name) pairs of `SHOWN` the line shows for a step's `metrics`. A policy-gradient step shows
    its gradient norm, not its loss: at the first update of a batch the ratio is 1, so the surrogate's value
    is minus the (aggregated) mean advantage, ~0 by construction (the advantages are centred per group),
    while its gradient is not; `actor/loss` is in MLflow all the same."""
    surrogate = SURROGATE in metrics
    return [(key, name) for key, name in SHOWN if key in metrics
            and not (key == "actor/loss" and surrogate) and not (key == "actor/grad_norm" and not surrogate)]


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


class StepProgress(L.Callback):
    """Progress of a run's steps for a person watching it. `label` names what runs ("grpo", "sft")."""

    def __init__(self, label: str, total: int, *, stream=None, every_s: float = 30.0):
        self.label, self.total, self.every_s = label, total, every_s
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start: Optional[float] = None
        self.last_line = 0.0
        self.done_before = 0

    def line(self, step: int, metrics: dict) -> str:
        elapsed = time.monotonic() - self.start
        per_step = elapsed / max(step - self.done_before, 1)
        parts = [f"{self.label} step {step}/{self.total}"]
        parts += [f"{name} {metrics[key]:.3g}" for key, name in shown(metrics)]
        parts.append(f"{per_step:.2f} s/step, {_minutes(per_step * (self.total - step))} left")
        return " | ".join(parts)

    def emit(self, text: str, *, final: bool) -> None:
        if self.tty:
            self.stream.write("\r\033[K" + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def on_train_start(self, trainer, pl_module) -> None:
        self.start = self.last_line = time.monotonic()
        self.done_before = getattr(pl_module, "step_count", trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not trainer.is_global_zero:
            return
        step = getattr(pl_module, "step_count", batch_idx + 1)
        history = getattr(pl_module, "history", None)
        if history:  # the step's own row (an evaluation may have logged after it)
            metrics = next((row for row in reversed(history) if "perf/step_s" in row), {})
        else:
            metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        now = time.monotonic()
        last = step == self.total
        if self.tty or last or now - self.last_line >= self.every_s:
            self.emit(self.line(step, metrics), final=last)
            self.last_line = now


class EvalLines:
    """`on_eval(step, metrics)` hook that prints one line per evaluation."""

    def __init__(self, stream=None, then=None):
        self.stream, self.then = stream or sys.stderr, then

    def __call__(self, step: int, metrics: dict) -> None:
        shown = [f"{k.split('/')[-1]} {metrics[k]:.3f}" for k in ("eval/accuracy", "eval/greedy_accuracy",
                                                                  "eval/pair_accuracy", "eval/reward_margin")
                 if k in metrics]
        tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.stream.write(("\r\033[K" if tty else "") + f"eval at step {step}: " + ", ".join(shown) + "\n")
        self.stream.flush()
        if self.then is not None:
            self.then(step, metrics)
