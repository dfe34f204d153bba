"""grpo-lab: train | eval | export | demo | grid | sweep | report | ui | bench | paradigm | config.

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
    config = named_by_overrides(config, args.set, args.config)
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
    folder = shown_path(result.checkpoint.parent)
    prefix = pythonpath_prefix(config.to_dict())
    print(f"MLflow: experiment '{config.tracking.experiment}' in {uri}\n"
          f"next: {ui_line(uri)}   (MLflow's UI, opened on the experiment's training runs)\n"
          f"      {prefix}grpo-lab eval {folder}   (held-out accuracy with CIs), "
          f"{prefix}grpo-lab export {folder} --out exported/")
    return 0


def ui_line(uri: str) -> str:
    """The `grpo-lab ui` command for the store `uri`."""
    from grpo_lab.conventions import default_tracking_uri

    return "grpo-lab ui" + ("" if uri == default_tracking_uri() else f" --tracking-uri {uri}")


def shown_path(path) -> str:
    """`path` relative to the working directory where it lies below it, for commands to copy."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def pythonpath_prefix(config) -> str:
    from grpo_lab.imports import pythonpath_prefix as prefix

    return prefix(config)


def check_data_early(config) -> None:
    """A data task's rows in local .jsonl/.json/.csv files, checked before torch loads (a row without
    its answer is reported in well under a second); other data is checked when the task is built."""
    from grpo_lab.config.sections import DATA_TASKS

    if config.task.name in DATA_TASKS:
        from grpo_lab.tasks.dataset import check_rows_early

        check_rows_early(config.task.name, seed=config.task.data_seed, options=config.task.options())


def named_by_overrides(config, overrides: list[str], path: Path | None = None):
    """`config` with a run name that shows its `--set` overrides (those that change what it computes,
    besides the seed), unless it names its run itself: runs of one config file stay apart in MLflow. A
    config that gives no `name` is named by its file (`my_task.yaml` -> `my_task-grpo-s0`); its `name`
    itself stays, since it is part of the config's hash."""
    import re

    from grpo_lab.config import Config, parse_overrides, with_overrides
    from grpo_lab.conventions import is_result_key

    shown = [f"{k}={v}" for k, v in parse_overrides(overrides) if is_result_key(k) and k not in ("seed", "name", "method")]
    name = Path(path).stem if path is not None and config.name == Config.name else config.name
    if config.tracking.run_name is not None or (not shown and name == config.name):
        return config
    label = re.sub(r"[^A-Za-z0-9_.=,+-]+", "_", ",".join(shown))
    run_name = "-".join([name, config.method, *([label] if shown else []), f"s{config.seed}"])
    return with_overrides(config, **{"tracking.run_name": run_name})


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
    folder = shown_path(done.folder)
    print(f"next: {pythonpath_prefix(done.config.to_dict())}grpo-lab eval {folder}   (evaluates it on the run's task), "
          f"or load it: transformers.AutoModelForCausalLM.from_pretrained({folder!r})")
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
    prefix = pythonpath_prefix(grid.runs[0].config.to_dict()) if grid.runs else ""
    print(f"next: grpo-lab report {grid.name}" + ("   (after the failed runs are fixed and rerun: "
                                                  f"{prefix}grpo-lab grid {args.file})" if summary.failed else ""))
    return 1 if summary.failed else 0


def cmd_sweep(args) -> int:
    from grpo_lab.experiments.sweep import format_study, load_sweep, run_sweep

    sweep = load_sweep(args.file, storage=args.storage, n_trials=args.n_trials)
    study = run_sweep(sweep, progress=not args.no_progress)
    print(format_study(study))
    from grpo_lab.conventions import redact

    print(f"Optuna study '{sweep.name}' in {redact(sweep.storage)}; MLflow: experiment "
          f"'{sweep.base.tracking.experiment}' in {sweep.base.tracking.resolved_uri} (runs tagged grpo_lab.sweep = "
          f"{sweep.name})\nnext: {pythonpath_prefix(sweep.base.to_dict())}grpo-lab sweep {args.file} --n-trials N   "
          "(continues the study up to N trials)")
    return 0


def cmd_ui(args) -> int:
    from grpo_lab.conventions import default_tracking_uri
    from grpo_lab.runs.ui import open_ui

    return open_ui(args.tracking_uri or default_tracking_uri(), experiment=args.experiment, host=args.host,
                   port=args.port, start=not args.print_only)


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

    p = sub.add_parser("ui", help="MLflow's UI on the workspace's store, with the URL of an experiment's training runs")
    p.add_argument("--experiment", default=None, help="MLflow experiment (default: the one of the run started last)")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow store (default $MLFLOW_TRACKING_URI or the workspace's mlflow.db)")
    p.add_argument("--host", default="127.0.0.1", help="address the UI listens on")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--print-only", action="store_true", help="print the URL and the mlflow command; start nothing")
    p.set_defaults(func=cmd_ui)

    p = sub.add_parser("demo", help="SFT warm start, GRPO on the chain task with a before/after table, then a small "
                                    "DeepSeekMath Fig. 5 grid (4 arms x 2 seeds) and its report")
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
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: this process's share of the cores)")
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
