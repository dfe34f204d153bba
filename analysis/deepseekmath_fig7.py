"""DeepSeekMath Fig. 7 at small scale: pass@k and maj@k (k = 1, 2, 4, ..., 64) on held-out chain
prompts before RL (the SFT checkpoint) and after GRPO; writes results/deepseekmath_fig7/.

The GRPO checkpoints are the final ones of the GRPO (outcome) arm of the deepseekmath_fig5 grid
(MLflow tags grpo_lab.checkpoint and grpo_lab.sft_checkpoint; run `python
analysis/deepseekmath_fig5.py` first). For each of its seeds, the SFT checkpoint and that seed's
GRPO checkpoint are evaluated on the same held-out prompts with 64 samples each at the run's
evaluation temperature (1.0, the sampling temperature of training; `--temperature 0.7` for the
paper's setting), drawn from the evaluation generator of that seed. pass@k is the unbiased
estimator from 64 samples; maj@k votes over the first k samples (maj@1 = pass@1 = accuracy).

Claims (paper: "RL enhances Maj@K but not Pass@K"), tested over seeds, paired, Holm-corrected:
after > before on pass@1 and on maj@64; before at least as good as after on pass@64.

    python analysis/deepseekmath_fig7.py [--grid deepseekmath_fig5] [--samples 64] [--temperature 1.0]
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import pandas as pd

BEFORE, AFTER = "before (SFT checkpoint)", "after GRPO"
GRPO_ARM = "method=grpo,estimator=group"


def grpo_runs(grid: str, arm: str, tracking_uri: str) -> list[dict]:
    """seed, run id, checkpoint, SFT checkpoint and config file of each finished run of `arm`."""
    from mlflow.tracking import MlflowClient

    from grpo_lab.analysis.report import ReportError, resolve_arm

    client = MlflowClient(tracking_uri=tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = [r for r in client.search_runs(experiments, filter_string=f"tags.\"grpo_lab.grid\" = '{grid}'",
                                          max_results=1000)
            if r.info.status == "FINISHED" and r.data.tags.get("grpo_lab.status") == "finished"]
    if not runs:
        raise ReportError(f"no finished runs of grid {grid!r} in {tracking_uri}; run python analysis/deepseekmath_fig5.py")
    label = resolve_arm(arm, sorted({r.data.tags.get("grpo_lab.arm", "") for r in runs}))
    found = []
    for r in runs:
        tags = r.data.tags
        if tags.get("grpo_lab.arm") != label:
            continue
        checkpoint = Path(tags["grpo_lab.checkpoint"])
        found.append({"seed": int(float(r.data.params["seed"])), "run_id": r.info.run_id, "checkpoint": checkpoint,
                      "sft": Path(tags["grpo_lab.sft_checkpoint"]), "config": checkpoint.parent / "config.yaml",
                      "sft_hash": tags.get("grpo_lab.sft_hash"), "arm": label})
    return sorted(found, key=lambda r: r["seed"])


def evaluate_pair(run: dict, *, samples: int, temperature: float | None, prompts: int | None) -> dict:
    """Metrics of the SFT checkpoint and of the run's final checkpoint on the run's held-out prompts."""
    import torch

    from grpo_lab.runs.checkpoint import load_checkpoint
    from grpo_lab.config import load_config, with_overrides
    from grpo_lab.engine import module_class
    from grpo_lab.models.policy import load_pretrained
    from grpo_lab.runs.train import build_task_for, quiet

    quiet()
    state = load_checkpoint(run["checkpoint"])["state_dict"]  # first: a refused file stops before any evaluation
    config = load_config(run["config"])
    changes = {}
    if temperature is not None:
        changes["train.eval_temperature"] = temperature
    if prompts is not None:
        changes["train.eval_prompts"] = prompts
    config = with_overrides(config, **changes) if changes else config
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    task = build_task_for(config)
    policy, tokenizer = load_pretrained(run["sft"], dtype=config.model.dtype,
                                        trust_remote_code=config.model.trust_remote_code)
    module = module_class("grpo")(with_overrides(config, method="grpo", **{"advantage.estimator": "group"}),
                                  policy, tokenizer, task)
    before = module.evaluate(samples=samples, log=False)
    weights = {k[len("policy."):]: v for k, v in state.items() if k.startswith("policy.")}
    module.policy.load_state_dict(weights)
    after = module.evaluate(samples=samples, log=False)
    return {"before": before, "after": after, "temperature": config.train.eval_temperature,
            "prompts": len(module.eval_examples)}


def tidy(rows: list[dict], runs: list[dict]) -> pd.DataFrame:
    """The analysis library's frame: arms before/after, one row per seed at step 0."""
    records = []
    for run, row in zip(runs, rows):
        for arm, key in ((BEFORE, "before"), (AFTER, "after")):
            metrics = dict(row[key])
            records.append({"run_id": f"{run['run_id']}-{key}", "grid": "deepseekmath_fig7", "arm": arm,
                            "seed": run["seed"], "step": 0, "sft_hash": run["sft_hash"], "config_hash": None,
                            **metrics})
    return pd.DataFrame(records)


def curve(frame: pd.DataFrame, ks: list[int], kind: str) -> pd.DataFrame:
    """Per arm and k: mean over seeds and a 95% t-interval of pass@k or maj@k (maj@1 = pass@1)."""
    from grpo_lab.analysis.plots import t_band

    out = []
    for arm, group in frame.groupby("arm"):
        for k in ks:
            key = "eval/accuracy" if k == 1 else f"eval/{kind}_at_{k}"
            centre, low, high = t_band(group[key].to_numpy(dtype=float))
            out.append({"arm": arm, "k": k, "mean": centre, "low": low, "high": high})
    return pd.DataFrame(out)


def plot(frame: pd.DataFrame, ks: list[int], path: Path, temperature: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, kind, title in ((axes[0], "maj", "maj@k"), (axes[1], "pass", "pass@k")):
        table = curve(frame, ks, kind)
        for arm, style in ((BEFORE, "--"), (AFTER, "-")):
            part = table[table["arm"] == arm]
            line, = ax.plot(part["k"], part["mean"], style, marker="o", label=arm)
            ax.fill_between(part["k"], part["low"], part["high"], color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set_xscale("log", base=2)
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.set_xlabel("k (samples per prompt)")
        ax.set_title(f"{title}, temperature {temperature:g}")
        ax.set_ylim(0, 1.02)  # accuracies; a t-band over few seeds can reach past them
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("held-out accuracy")
    axes[0].legend()
    figure.suptitle("mean over seeds, 95% t-interval band")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def k_table(frame: pd.DataFrame, ks: list[int]) -> list[str]:
    from grpo_lab.analysis.estimators import difference_ci

    lines = ["| k | pass@k before | pass@k after | change [95% CI] | maj@k before | maj@k after | change [95% CI] |",
             "|---|---|---|---|---|---|---|"]
    before = frame[frame["arm"] == BEFORE].set_index("seed").sort_index()
    after = frame[frame["arm"] == AFTER].set_index("seed").sort_index()
    for k in ks:
        cells = [str(k)]
        for kind in ("pass", "maj"):
            key = "eval/accuracy" if k == 1 else f"eval/{kind}_at_{k}"
            b, a = before[key].to_numpy(float), after[key].to_numpy(float)
            change = difference_ci(a, b, paired=True, n_resamples=2000, seed=0)
            cells += [f"{b.mean():.3f}", f"{a.mean():.3f}", f"{change.estimate:+.3f} [{change.low:+.3f}, {change.high:+.3f}]"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", default="deepseekmath_fig5", help="the grid whose GRPO runs to evaluate")
    parser.add_argument("--arm", default=GRPO_ARM, help="the GRPO arm of that grid")
    parser.add_argument("--samples", type=int, default=64, help="samples per held-out prompt (k up to this)")
    parser.add_argument("--temperature", type=float, default=None, help="default: the runs' train.eval_temperature (1.0)")
    parser.add_argument("--prompts", type=int, default=None, help="held-out prompts (default: the runs' train.eval_prompts)")
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--out", type=Path, default=Path("results"))
    args = parser.parse_args(argv)

    from grpo_lab.analysis.frame import resolve_tracking_uri
    from grpo_lab.analysis.report import Claim, write_report
    from grpo_lab.evaluation import ks_up_to

    start = time.time()
    uri = resolve_tracking_uri(args.tracking_uri)
    runs = grpo_runs(args.grid, args.arm, uri)
    rows = []
    for run in runs:
        row = evaluate_pair(run, samples=args.samples, temperature=args.temperature, prompts=args.prompts)
        rows.append(row)
        print(f"seed {run['seed']}: pass@1 {row['before']['eval/accuracy']:.3f} -> {row['after']['eval/accuracy']:.3f}, "
              f"maj@{args.samples} {row['before'][f'eval/maj_at_{args.samples}']:.3f} -> "
              f"{row['after'][f'eval/maj_at_{args.samples}']:.3f}, pass@{args.samples} "
              f"{row['before'][f'eval/pass_at_{args.samples}']:.3f} -> {row['after'][f'eval/pass_at_{args.samples}']:.3f}",
              file=sys.stderr)
    frame = tidy(rows, runs)
    ks = ks_up_to(args.samples)
    n = args.samples
    claims = [
        Claim("RL raises pass@1", AFTER, BEFORE, metric="eval/accuracy"),
        Claim(f"RL raises maj@{n}", AFTER, BEFORE, metric=f"eval/maj_at_{n}"),
        Claim(f"RL does not raise pass@{n}: the SFT checkpoint is at least as good", BEFORE, AFTER,
              metric=f"eval/pass_at_{n}", at_least_as_good=True),
    ]
    command = shlex.join(["python", "analysis/deepseekmath_fig7.py", *(sys.argv[1:] if argv is None else argv)])
    readme = write_report("deepseekmath_fig7", claims=claims, metric="eval/accuracy", out_dir=args.out,
                          tracking_uri=uri, frame=frame, grid=args.grid, command=command, curves=False).path
    folder = readme.parent
    plot(frame, ks, folder / "pass_maj_at_k.png", rows[0]["temperature"])
    text = readme.read_text()
    head, rest = text.split("## Claims", 1)
    intro = [
        "# deepseekmath_fig7: pass@k and maj@k before and after GRPO", "",
        f"DeepSeekMath Fig. 7 claims that RL raises maj@k (and pass@1) but not pass@k at large k: it makes the "
        "right answer more likely among the ones the SFT model could already give, rather than teaching new ones. "
        f"Here: the final checkpoints of the GRPO (outcome) arm `{runs[0]['arm']}` of grid `{args.grid}` "
        f"({len(runs)} seeds) against their shared SFT checkpoint, {rows[0]['prompts']} held-out chain prompts x "
        f"{n} samples at temperature {rows[0]['temperature']:g} (the training temperature; the paper used 0.7). "
        "Each seed evaluates both checkpoints with the same evaluation generator, so before/after are paired by seed; "
        "the spread of 'before' is sampling noise alone.", "",
        "## pass@k and maj@k vs k", "",
        "Mean over seeds; change = after - before, paired bootstrap 95% CI over seeds.", "",
        *k_table(frame, ks), "", "![pass@k and maj@k vs k](pass_maj_at_k.png)", "",
    ]
    readme.write_text("\n".join(intro) + "\n" + head.split("\n", 2)[-1].lstrip() + "## Claims" + rest)
    print(readme.read_text())
    print(f"written: {readme} ({time.time() - start:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    from grpo_lab.analysis.report import ReportError
    from grpo_lab.runs.checkpoint import CheckpointError
    from grpo_lab.models.policy import ModelError

    try:
        main()
    except (CheckpointError, ModelError, ReportError) as exc:  # one line, as grpo-lab prints it
        sys.exit(f"deepseekmath_fig7: error: {exc}")
