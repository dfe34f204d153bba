"""`grpo-lab demo`: SFT warm start, then GRPO on the chain task, then a before/after table.

Everything lands in the working directory: the MLflow store (`mlflow.db`), the cached warm start
(`.grpo_lab/sft/`) and the run's checkpoint (`runs/`). A second demo reuses the warm start.
"""

from __future__ import annotations

from grpo_lab.config import from_dict

DEMO = {
    "name": "demo",
    "method": "grpo",
    "seed": 0,
    "task": {"name": "chain", "digits": 1, "min_terms": 3, "max_terms": 5},
    "model": {"hidden_size": 128, "num_layers": 2, "num_heads": 4, "intermediate_size": 512, "max_length": 64},
    "sft": {"steps": 1500, "lr": 3e-3, "batch_size": 64, "warmup_steps": 50},
    "rollout": {"prompts_per_step": 32, "group_size": 8, "max_new_tokens": 16},
    "optim": {"lr": 3e-4},
    "train": {"steps": 150, "eval_every": 50, "eval_prompts": 256, "eval_samples": 8},
    "tracking": {"experiment": "grpo_lab_demo"},
}


def demo(*, progress: bool = True) -> None:
    from grpo_lab.cli import format_result
    from grpo_lab.train import run

    config = from_dict(DEMO)
    print(f"grpo_lab demo: SFT warm start ({config.sft.steps} steps, cached), then GRPO for {config.train.steps} "
          f"steps of {config.rollout.prompts_per_step} prompts x {config.rollout.group_size} samples on the chain task")
    result = run(config, progress=progress)
    print("\nHeld-out prompts, before (SFT checkpoint) and after GRPO:")
    print(format_result(result))
    uri = config.tracking.resolved_uri
    print(f"\nMLflow: experiment '{config.tracking.experiment}' in {uri}\n"
          f"  mlflow ui --backend-store-uri {uri}    # then open http://127.0.0.1:5000")
