"""What the reproduction scripts of learned rewards share: the command line (with `--quick`), running
a grid file and writing its report through grpo_lab's report, and claims the report's arm
comparisons do not cover (a paired difference of differences, a curve that peaks and falls), tested
the way the report tests its own: paired t over seeds, Holm-adjusted, with the same verdict words.

`--quick` runs the same grid end to end at a size that takes a minute or two (a tiny model, a few
steps, 2 seeds) under the grid name `<name>_quick`, and writes its report to the workspace's
reports/ unless `--out` says otherwise: the full run's results/ stay as they are.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

ALPHA = 0.05
TINY = {  # a tiny model and task: the settings of --quick
    "task.min_terms": 2, "task.max_terms": 3, "task.train_size": 400, "task.eval_size": 64,
    "model.hidden_size": 32, "model.num_layers": 1, "model.num_heads": 2, "model.intermediate_size": 64,
    "model.max_length": 32, "sft.steps": 150, "sft.lr": 1.0e-2, "sft.batch_size": 16, "sft.warmup_steps": 5,
    "rollout.prompts_per_step": 4, "rollout.group_size": 4, "rollout.max_new_tokens": 8, "optim.lr": 1.0e-3,
    "train.eval_prompts": 16, "train.eval_samples": 4,
}


def parser(doc: str, grid: Path) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--grid", type=Path, default=grid, help="the grid file")
    p.add_argument("--jobs", type=int, default=2, help="runs at once (each train.threads threads)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="default: the grid file's (2 with --quick)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key of every run (after the grid's own `set`)")
    p.add_argument("--out", type=Path, default=None,
                   help="writes OUT/<grid name>/ (default results/, or the workspace's reports/ with --quick)")
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples")
    p.add_argument("--report-only", action="store_true", help="do not run anything; report what MLflow holds")
    p.add_argument("--quick", action="store_true", help="a tiny model, a few steps, 2 seeds: the whole path in minutes")
    return p


def grid_spec(args, quick: dict, quick_factors: dict | None = None) -> tuple[dict, Path]:
    """The grid spec to run and the file it is read from: the grid file with --set, --seeds and, with
    --quick, the tiny settings and factor values (written to the workspace's grids/ as `<name>_quick.yaml`)."""
    from grpo_lab.conventions import workspace

    spec = yaml.safe_load(args.grid.read_text())
    path = args.grid
    if args.quick:
        spec["name"] = f"{spec['name']}_quick"
        spec["set"] = {**spec.get("set", {}), **TINY, **quick}
        spec["seeds"] = [0, 1]
        spec["factors"] = {**spec["factors"], **(quick_factors or {})}
    for item in args.set:
        key, _, value = item.partition("=")
        spec.setdefault("set", {})[key] = yaml.safe_load(value)
    if args.seeds is not None:
        spec["seeds"] = args.seeds
    if args.quick or args.set or args.seeds is not None:  # the report reads its claims and name from this file
        path = workspace() / "grids" / f"{spec['name']}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        spec["base"] = str((args.grid.parent / spec["base"]).resolve())  # relative to the grid file
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return spec, path


def run_and_report(args, spec: dict, path: Path, script: str, argv: list[str] | None):
    """Runs what MLflow does not hold yet of the grid, then writes its report; returns (report, the grid's
    runs as a tidy frame, restricted to the configs of this grid file)."""
    from grpo_lab.analysis.report import report_grid
    from grpo_lab.conventions import workspace
    from grpo_lab.experiments import expand, run_grid

    grid = expand(spec, folder=path.parent, default_name=path.stem, where=str(path))
    start = time.time()
    if not args.report_only:
        summary = run_grid(grid, jobs=args.jobs)
        if summary.failed:
            print(f"{len(summary.failed)} run(s) failed; the report covers the finished ones", file=sys.stderr)
    from grpo_lab.analysis import load_runs
    from grpo_lab.analysis.claims import ReportError

    uri = grid.runs[0].config.tracking.resolved_uri
    out = args.out or (workspace() / "reports" if args.quick else Path("results"))
    command = shlex.join(["python", script, *(sys.argv[1:] if argv is None else argv)])
    # the runs of this grid as it expands here; a run of the same grid name from another config (an
    # older grid file, another precision: train.precision auto resolves per machine) stays out
    frame = load_runs(spec["name"], tracking_uri=uri)
    mine = frame[frame["config_hash"].isin({run.config_hash for run in grid.runs})]
    other = frame["run_id"].nunique() - mine["run_id"].nunique() if len(frame) else 0
    if other and mine.empty:
        precision = grid.runs[0].config.resolved().train.precision
        raise SystemExit(f"error: none of the {other} finished run(s) of grid {spec['name']} in MLflow was made from "
                         f"{path} as it expands here (train.precision resolves to {precision} on this machine); "
                         "run the grid (without --report-only), or --set the key they differ in (e.g. "
                         "train.precision=32-true) to report them")
    if other:
        print(f"left out {other} finished run(s) of grid {spec['name']} made from other configs", file=sys.stderr)
    try:
        report = report_grid(spec["name"], grid_file=path, tracking_uri=uri, out_dir=out,
                             n_resamples=args.resamples, command=command, frame=mine)
    except ReportError as error:
        raise SystemExit(f"error: {error}") from None
    print(f"grid and report: {time.time() - start:.0f} s", file=sys.stderr)
    return report, mine


@dataclass
class PairedClaim:
    """A claim that `x` exceeds `y` (or is at least as good), x[i] and y[i] of seed i."""

    text: str
    x: np.ndarray
    y: np.ndarray
    at_least_as_good: bool = False
    note: str = ""
    verdict: str = ""
    reason: str = ""


def decide(claims: list[PairedClaim], confidence: float = 0.95) -> list[PairedClaim]:
    """Verdicts as the report gives them: holds when the Holm-adjusted paired t p < 0.05 in the claimed
    direction (an "at least as good" claim holds unless the other side is significantly better); does
    not hold when the difference goes the other way significantly or, with 5 or more seeds, its CI
    lies wholly on the wrong side; else inconclusive."""
    from grpo_lab.analysis import difference_t_interval, holm, paired_t

    tests = [paired_t(c.x, c.y) if len(c.x) > 1 else None for c in claims]
    raw = [t.pvalue if t is not None and np.isfinite(t.pvalue) else 1.0 for t in tests]
    adjusted = holm(raw) if raw else []
    for claim, p in zip(claims, adjusted):
        diff = difference_t_interval(claim.x, claim.y, paired=True, confidence=confidence)
        est, low, high = diff.estimate, diff.low, diff.high
        shown = f"difference {est:+.3f}, {int(confidence * 100)}% CI [{low:+.3f}, {high:+.3f}], adjusted p = {p:.3g}"
        wrong_side = high < 0 if np.isfinite(high) else False
        if claim.at_least_as_good:
            claim.verdict = "does not hold" if p < ALPHA and est < 0 else "holds"
        elif p < ALPHA and est > 0:
            claim.verdict = "holds"
        elif (p < ALPHA and est < 0) or (len(claim.x) >= 5 and wrong_side):
            claim.verdict = "does not hold"
        else:
            claim.verdict = "inconclusive"
        claim.reason = f"{shown} (n = {len(claim.x)} seeds, paired t)"
    return claims


def claims_markdown(claims: list[PairedClaim]) -> str:
    rows = ["| claim | verdict | why |", "|---|---|---|"]
    for c in claims:
        why = c.reason + (f"; {c.note}" if c.note else "")
        rows.append(f"| {c.text} | **{c.verdict}** | {why} |")
    return "\n".join(rows)


def append_section(readme: Path, title: str, body: str) -> None:
    """Adds a `## title` section at the end of a report's README (replacing one of that title)."""
    text = Path(readme).read_text()
    head = f"\n## {title}\n"
    if head in text:
        text = text[: text.index(head)]
    Path(readme).write_text(text.rstrip("\n") + "\n" + head + "\n" + body.strip("\n") + "\n")


def values_at(frame, arm: str, metric: str, step: int) -> np.ndarray:
    """`metric` of each seed of `arm` at `step` (the last logged value at or before it), in seed order."""
    rows = frame[(frame["arm"] == arm) & (frame["step"] <= step)].dropna(subset=[metric])
    last = rows.sort_values("step").groupby("seed")[metric].last()
    return last.sort_index().to_numpy(dtype=float)
