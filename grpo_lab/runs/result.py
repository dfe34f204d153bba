"""What a run hands back: its final and initial evaluations, its history and where its files are."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from grpo_lab.config import Config


@dataclass
class RunResult:
    run_id: Optional[str]
    config: Config
    metrics: dict  # the final evaluation
    initial: dict  # the evaluation before the first RL step
    history: list = field(default_factory=list)  # every logged row: {"step": s, metric: value, ...}
    checkpoint: Optional[Path] = None
    sft_path: Optional[Path] = None

    def format(self) -> str:
        """The before/after table of the held-out metrics, and where the run is."""
        k = self.config.train.eval_samples
        keys = ["eval/accuracy", "eval/greedy_accuracy", f"eval/pass_at_{k}", f"eval/maj_at_{k}", "eval/len_correct",
                "eval/len_wrong", "eval/entropy", "eval/pair_accuracy", "eval/reward_margin"]
        lines = [f"| metric | before (step 0) | after (step {self.config.train.steps}) |", "|---|---|---|"]
        for key in keys:
            if key in self.metrics:
                before = self.initial.get(key, float("nan"))
                lines.append(f"| {key} | {before:.3f} | {self.metrics[key]:.3f} |")
        where = [f"run: {self.config.run_name}  (MLflow run id {self.run_id})", f"checkpoint: {self.checkpoint}"]
        return "\n".join(lines + where)
