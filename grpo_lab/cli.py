"""grpo-lab: train | eval | export | demo | grid | sweep | report | bench | paradigm | config.

Every expected failure (a bad config, a missing file, a failing reward, a non-finite loss) ends
with one line `grpo-lab: error: ...` and exit status 2; nothing finished is lost.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

def cmd_train(args) -> int:
    from grpo_lab.config import load_config

    config = load_config(args.config, args.set)
    config = named_by_overrides(config, args.set)
    check_data_early(config)
    from grpo_lab.methods import check_config

    check_config(config)
    from grpo_lab.runs import run

    resume = None
    if args.resume:
        from grpo_lab.runs.checkpoint import checkpoint_dir, last_checkpoint, read_resume_info

        resume = last_checkpoint(config)
        if resume is None:
            print(f"grpo-lab: no checkpoint under {checkpoint_dir(config)}; starting from step 0", file=sys.stderr)
        else:
            print(f"grpo-lab: resuming from step {read_resume_info(resume)['step']} ({resume})", file=sys.stderr)
    result = run(config, progress=not args.no_progress, resume_from=resume)
    print(result.format())
    uri = config.tracking.resolved_uri
    print(f"MLflow: experiment '{config.tracking.experiment}' in {uri}\n"
          f"next: mlflow ui --backend-store-uri {uri}   (then open http://127.0.0.1:5000)")
    return 0


def check_data_early(config) -> None:
    """A data task's rows in local .jsonl/.json/.csv files, checked before torch loads (a row without
    its answer is reported in well under a second); other data is checked when the task is built."""
    from grpo_lab.config.sections import DATA_TASKS

    if config.task.name in DATA_TASKS:
        from grpo_lab.tasks.dataset import check_rows_early

        check_rows_early(config.task.name, seed=config.task.data_seed, options=config.task.options())


def named_by_overrides(config, overrides: list[str]):
    """`config` with a run name that shows its `--set` overrides (those that change what it computes,
    besides the seed), unless it names its run itself: runs of one config file stay apart in MLflow."""
    import re

    from grpo_lab.config import parse_overrides, with_overrides
    from grpo_lab.conventions import is_result_key

    shown = [f"{k}={v}" for k, v in parse_overrides(overrides) if is_result_key(k) and k not in ("seed", "name", "method")]
    if config.tracking.run_name is not None or not shown:
        return config
    label = re.sub(r"[^A-Za-z0-9_.=,+-]+", "_", ",".join(shown))
    return with_overrides(config, **{"tracking.run_name": f"{config.name}-{config.method}-{label}-s{config.seed}"})


def cmd_eval(args) -> int:
    from grpo_lab.runs.evaluate import evaluate_source
    from grpo_lab.runs.sources import load_source

    source = load_source(args.source, overrides=args.set, config_file=args.config, tracking_uri=args.tracking_uri)
    report = evaluate_source(source, split=args.split, samples=args.samples, temperature=args.temperature,
                             prompts=args.prompts, log=not args.no_log)
    print(report.format())
    return 0


def cmd_export(args) -> int:
    from grpo_lab.runs.export import export

    done = export(args.source, args.out, tracking_uri=args.tracking_uri, overwrite=args.overwrite)
    print(f"exported {args.source} to {done.folder}: {', '.join(done.files)}")
    return 0


def cmd_config(args) -> int:
    from grpo_lab.config.describe import describe

    print(describe(args.query))
    return 0


def cmd_paradigm(args) -> int:
    from grpo_lab.core.paradigm import format_table
    from grpo_lab.methods.recipes import paradigm_table

    print("The methods as grpo_lab runs them (grpo_lab.methods.RECIPES): each a data source, a reward (the task's "
          "verifier plus shaping), an advantage estimator and objectives; every method also reads task, model, sft, "
          "train, tracking, optim and rollout.{prompts_per_step, group_size, max_new_tokens, temperature, top_p}.\n")
    config = None
    if args.config is not None or args.set:  # the reward column as a run of this config would score
        from grpo_lab.config import load_config

        config = load_config(args.config, args.set)
    print(paradigm_table(config))
    print("\nDeepSeekMath Table 10, the paradigm these recipes implement:\n")
    print(format_table())
    return 0


def cmd_report(args) -> int:
    from grpo_lab.analysis.report import report_grid

    report = report_grid(args.name, grid_file=args.grid_file, metric=args.metric, claims=args.claim,
                         baseline=args.baseline, lower_is_better=args.lower_is_better,
                         tracking_uri=args.tracking_uri, out_dir=args.out, n_resamples=args.resamples)
    print(report.claims_table())
    print(f"report: {report.path}")
    return 0


def cmd_grid(args) -> int:
    from grpo_lab.experiments import format_plan, load_grid, plan, run_grid

    grid = load_grid(args.file)
    if args.dry_run:
        print(format_plan(grid, plan(grid)))
        return 0
    if args.storage:
        from grpo_lab.experiments.shared import run_shared_grid

        summary = run_shared_grid(grid, args.storage, jobs=args.jobs, progress=not args.no_progress,
                                  heartbeat=args.heartbeat)
    else:
        summary = run_grid(grid, jobs=args.jobs, progress=not args.no_progress)
    print(f"grid {grid.name}: {summary.skipped} already finished, {len(summary.finished)} ran, "
          f"{len(summary.failed)} failed")
    tracking = grid.runs[0].config.tracking if grid.runs else None
    if tracking is not None:
        print(f"MLflow: experiment '{tracking.experiment}' in {tracking.resolved_uri} (runs tagged grpo_lab.grid = "
              f"{grid.name})")
    print(f"next: grpo-lab report {grid.name}" + ("   (after the failed runs are fixed and rerun: grpo-lab grid "
                                                  f"{args.file})" if summary.failed else ""))
    return 1 if summary.failed else 0


def cmd_sweep(args) -> int:
    from grpo_lab.experiments.sweep import format_study, load_sweep, run_sweep

    sweep = load_sweep(args.file, storage=args.storage, n_trials=args.n_trials)
    study = run_sweep(sweep, progress=not args.no_progress)
    print(format_study(study))
    from grpo_lab.conventions import redact

    print(f"Optuna study '{sweep.name}' in {redact(sweep.storage)}; MLflow: experiment "
          f"'{sweep.base.tracking.experiment}' in {sweep.base.tracking.resolved_uri} (runs tagged grpo_lab.sweep = "
          f"{sweep.name})\nnext: grpo-lab sweep {args.file} --n-trials N   (continues the study up to N trials)")
    return 0


def cmd_demo(args) -> int:
    from grpo_lab.demo import demo

    demo(progress=not args.no_progress, overrides=args.set)
    return 0


def cmd_bench(args) -> int:
    from grpo_lab.bench import bench, format_record

    record = bench(hidden=args.hidden, layers=args.layers, heads=args.heads, prompts=args.prompts, gens=args.gens,
                   max_new=args.max_new, steps=args.steps, warmup=args.warmup, method=args.method,
                   device=args.device, dtype=args.dtype, fixed_length=args.fixed_length, threads=args.threads,
                   seed=args.seed, micro_batch=args.micro_batch, devices=args.devices, precision=args.precision,
                   adapter=args.adapter, activation_checkpointing=args.activation_checkpointing)
    if record is not None:  # the other DDP processes stay silent
        print(format_record(record))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from grpo_lab.config.precision import PRECISIONS

    parser = argparse.ArgumentParser(prog="grpo-lab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train one run from a YAML config",
                       epilog="Every config key, its default and meaning: grpo-lab config [SECTION|KEY]")
    p.add_argument("config", type=Path, help="experiment YAML (see experiments/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set optim.lr=1e-4 (repeatable; `grpo-lab config` lists them)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--resume", action="store_true",
                   help="continue from the run's last checkpoint (train.checkpoint_every) in the same MLflow run")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="greedy accuracy, accuracy, pass@k and maj@k with CIs of a run, checkpoint or model",
                       epilog="The config comes with the run (an export keeps it as grpo_lab.yaml); --set changes it, "
                              "e.g. --set task.path=other.jsonl")
    p.add_argument("source", help="an MLflow run id, a run folder, a checkpoint file, or a model folder")
    p.add_argument("--split", default="eval", choices=("eval", "train"), help="the task's held-out or training prompts")
    p.add_argument("--samples", type=int, default=None, help="k: samples per prompt (default train.eval_samples)")
    p.add_argument("--temperature", type=float, default=None, help="of the samples (default train.eval_temperature)")
    p.add_argument("--prompts", type=int, default=None, help="prompts evaluated (default train.eval_prompts; 0: all)")
    p.add_argument("--config", type=Path, default=None, help="YAML merged over the source's config (task, train, ...)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key (repeatable)")
    p.add_argument("--tracking-uri", default=None, help="MLflow store of a run id (default as in the config)")
    p.add_argument("--no-log", action="store_true", help="print only; log no MLflow run")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("export", help="a run's policy and tokenizer as a Hugging Face model folder (safetensors)")
    p.add_argument("source", help="an MLflow run id, a run folder or a checkpoint file")
    p.add_argument("--out", type=Path, required=True, help="the folder to write (new or empty)")
    p.add_argument("--tracking-uri", default=None, help="MLflow store of a run id")
    p.add_argument("--overwrite", action="store_true", help="write into a folder that is not empty")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("config", help="every config key with its default, type and meaning")
    p.add_argument("query", nargs="?", default=None, metavar="SECTION|KEY", help="e.g. optim, or loss.aggregation")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("paradigm", help="the methods as data source, reward and gradient coefficient, and the config of each")
    p.add_argument("config", type=Path, nargs="?", default=None,
                   help="a run's YAML: the reward column shows what it scores with (Model for reward.model)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key (repeatable)")
    p.set_defaults(func=cmd_paradigm)

    p = sub.add_parser("report", help="a grid's runs from MLflow -> results/NAME/README.md (claims, CIs, tests, verdicts) + plots")
    p.add_argument("name", help="grid name (MLflow tag grpo_lab.grid); reads experiments/NAME.yaml when it exists")
    p.add_argument("--grid-file", type=Path, default=None, help="grid YAML with metric and claims (default experiments/NAME.yaml)")
    p.add_argument("--metric", default=None, help="primary metric (default: the grid file's, else eval/accuracy)")
    p.add_argument("--claim", action="append", default=[], metavar="BETTER>WORSE",
                   help="claim to test, e.g. --claim 'grpo>online_rft' or 'a>=b' (at least as good); replaces the file's")
    p.add_argument("--baseline", default=None, help="also compare every arm with this arm")
    p.add_argument("--lower-is-better", action="store_true", help="the metric improves downwards (lengths, losses)")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow URI (default $MLFLOW_TRACKING_URI or the workspace's mlflow.db)")
    p.add_argument("--out", type=Path, default=None, help="writes OUT/NAME/ (default: the workspace's reports/)")
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("grid", help="run a grid of arms x seeds (only the runs MLflow does not hold as finished)")
    p.add_argument("file", type=Path, help="grid YAML (see experiments/grid_example.yaml)")
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel, each in its own process")
    p.add_argument("--dry-run", action="store_true", help="list the runs and which are already finished; run nothing")
    p.add_argument("--storage", default=None, metavar="URL",
                   help="a shared queue (Optuna RDB URL, e.g. postgresql://user@host/db): every machine running "
                        "the same command takes the next missing run; a dead machine's runs go back to the queue")
    p.add_argument("--heartbeat", type=int, default=30, metavar="SECONDS",
                   help="with --storage: seconds between a worker's heartbeats; silent for 4 of them, it counts as dead")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_grid)

    p = sub.add_parser("sweep", help="an Optuna study over a search space; running it again continues the study")
    p.add_argument("file", type=Path, help="sweep YAML (see experiments/sweep_example.yaml)")
    p.add_argument("--storage", default=None, help="Optuna storage URL (overrides the file's), e.g. postgresql://...")
    p.add_argument("--n-trials", type=int, default=None, help="the study's total number of trials (overrides the file's)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("demo", help="SFT warm start, then GRPO on the chain task, then a before/after table")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of the demo's config, e.g. --set train.threads=1 (repeatable)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("bench", help="seconds per RL step of a method on a Qwen2 model built from flags (one JSON line)")
    p.add_argument("--hidden", type=int, default=128, help="hidden size")
    p.add_argument("--layers", type=int, default=4, help="decoder layers")
    p.add_argument("--heads", type=int, default=None, help="attention heads (default hidden/32)")
    p.add_argument("--prompts", type=int, default=8, help="prompts per step")
    p.add_argument("--gens", type=int, default=8, help="completions per prompt")
    p.add_argument("--max-new", type=int, default=8, help="completion length cap")
    p.add_argument("--steps", type=int, default=5, help="timed steps (after --warmup)")
    p.add_argument("--warmup", type=int, default=2, help="steps run before timing")
    p.add_argument("--method", default="grpo", help="the method's module (grpo, ppo, ...)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    p.add_argument("--dtype", default=None, choices=("float32", "bfloat16"),
                   help="weights' dtype (default bfloat16 on cuda, float32 on cpu)")
    p.add_argument("--fixed-length", action="store_true", help="forbid EOS: every completion is --max-new tokens")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 keeps torch's default)")
    p.add_argument("--micro-batch", type=int, default=0,
                   help="sequences per forward/backward of the update, gradients accumulated (0: all at once)")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="precision of the step (train.precision; auto: bf16-mixed where the hardware has bf16)")
    p.add_argument("--adapter", default="none", choices=("none", "lora"), help="LoRA adapters on the policy (peft)")
    p.add_argument("--activation-checkpointing", action="store_true", help="recompute activations in the backward")
    p.add_argument("--devices", type=int, default=1,
                   help="processes (DDP, each with a slice of the step's prompts; threads per process: "
                        "--threads, or without it the CPU count / N, as Lightning sets it)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from grpo_lab.errors import GrpoLabError

    try:
        return args.func(args)
    except (GrpoLabError, FileNotFoundError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"grpo-lab: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("grpo-lab: interrupted; finished runs are in MLflow", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
