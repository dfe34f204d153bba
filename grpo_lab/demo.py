"""`grpo-lab demo`: SFT warm start, GRPO on the chain task with a before/after table, then a small
DeepSeekMath Fig. 5 (RFT, online RFT, GRPO outcome, GRPO process; 2 seeds) and its report.

Everything lands in the workspace (`grpo_workspace/` in the working directory, or
`$GRPO_LAB_WORKSPACE`): the MLflow store (`mlflow.db`), the cached warm start (`cache/sft/`), the
runs' checkpoints (`runs/`) and the Fig. 5 report (`reports/`). A second demo reuses the warm start
and the finished Fig. 5 runs (the grid runner skips what MLflow holds).
"""

from __future__ import annotations

import time
from pathlib import Path

from grpo_lab.config import Config
from grpo_lab.conventions import workspace

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

# experiments/deepseekmath_fig5.yaml at demo scale: 2 seeds x 4 arms x 30 steps, 64 held-out prompts
FIG5_DEMO = {
    "name": "deepseekmath_fig5_demo",
    "set": {"name": "fig5_demo", "train.steps": 30, "train.eval_every": 10, "train.eval_prompts": 64,
            "train.eval_samples": 8},
    "factors": {"method": ["rft", "online_rft", "grpo", "grpo"],
                "advantage.estimator": ["group", "group", "group", "process"]},
    "zip": True,
    "seeds": [0, 1],
    "metric": "eval/accuracy",
    "claims": [
        {"text": "Online RFT beats RFT", "better": "online_rft", "worse": "rft"},
        {"text": "GRPO (outcome) beats online RFT", "better": "method=grpo,estimator=group",
         "worse": "online_rft"},
        {"text": "Process supervision is at least as good as outcome supervision",
         "better": "estimator=process", "worse": "method=grpo,estimator=group", "at_least_as_good": True},
    ],
}


def demo(*, progress: bool = True, fig5: bool = True, overrides: list[str] | None = None) -> None:
    """The demo's GRPO run on `DEMO` (with `overrides`, `--set key=value`), then the small Fig. 5."""
    from grpo_lab.config import load_config
    from grpo_lab.methods import check_config
    from grpo_lab.runs import run

    start = time.time()
    config = load_config(None, overrides, base=DEMO)
    check_config(config)
    print(f"grpo_lab demo: SFT warm start ({config.sft.steps} steps, reused by later runs), then GRPO for {config.train.steps} "
          f"steps of {config.rollout.prompts_per_step} prompts x {config.rollout.group_size} samples on the chain task")
    result = run(config, progress=progress)
    print("\nHeld-out prompts, before (SFT checkpoint) and after GRPO:")
    print(result.format())
    uri = config.tracking.resolved_uri
    if fig5:
        demo_fig5(config, progress=progress)
    print(f"\nEverything is in {workspace()}/ (runs/, cache/, reports/). MLflow: experiment "
          f"'{config.tracking.experiment}' in {uri}\n"
          f"next: grpo-lab ui   (MLflow's UI, opened on the demo's training runs), or train the full run: "
          f"grpo-lab train experiments/grpo_chain.yaml\n"
          f"demo: {time.time() - start:.0f} s")


def demo_fig5(base: Config, *, progress: bool = False, out_dir: str | Path | None = None) -> Path:
    """DeepSeekMath Fig. 5 at demo scale on `base` (the demo's config): 4 arms x 2 seeds, then the
    report in `out_dir/deepseekmath_fig5_demo/README.md` (default: the workspace's reports/)."""
    from grpo_lab.analysis.report import claim_from_dict, write_report
    from grpo_lab.experiments import expand, run_grid

    spec = FIG5_DEMO
    steps = spec["set"]["train.steps"]
    print(f"\nDeepSeekMath Fig. 5, small: RFT, online RFT, GRPO (outcome), GRPO (process) from the same SFT "
          f"checkpoint, {len(spec['seeds'])} seeds x {steps} steps each (experiments/deepseekmath_fig5.yaml "
          "is the full grid)")
    run_grid(expand({**spec, "base": base.to_dict()}, default_name=spec["name"]), progress=False)
    report = write_report(spec["name"], claims=[claim_from_dict(c) for c in spec["claims"]], metric=spec["metric"],
                          out_dir=out_dir, tracking_uri=base.tracking.resolved_uri,
                          factors=list(spec["factors"]), command="grpo-lab demo")
    print("\nFinal held-out accuracy (pass@1) per arm, mean and 95% CI over seeds:")
    print(report.arm_table())
    print("\nClaims (Holm-corrected tests over the seeds):")
    print(report.claims_table())
    print(f"report and plots: {report.path}")
    return report.path
