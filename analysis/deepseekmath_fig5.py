"""DeepSeekMath Fig. 5 at small scale: run the grid experiments/deepseekmath_fig5.yaml (what MLflow
does not hold yet) and write results/deepseekmath_fig5/ (claims, CIs, Holm-corrected tests,
verdicts, learning curves, final-metric plots).

Arms: RFT, online RFT, GRPO (outcome), GRPO (process supervision) from one SFT checkpoint, 5
seeds. Each run is an MLflow run tagged grpo_lab.grid / grpo_lab.arm / grpo_lab.factors; a killed
script resumes by running it again. The same as `grpo-lab grid experiments/deepseekmath_fig5.yaml
--jobs 2` then `grpo-lab report deepseekmath_fig5`, plus --set overrides for a quick check.

    python analysis/deepseekmath_fig5.py [--jobs 2] [--seeds 0 1 2 3 4] [--set KEY=VALUE ...] [--report-only]
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import yaml

GRID = Path("experiments/deepseekmath_fig5.yaml")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=Path, default=GRID, help="the grid file")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (each train.threads threads)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default: the grid file's")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key of every run (after the grid's own `set`)")
    parser.add_argument("--out", type=Path, default=Path("results"), help="writes OUT/<grid name>/")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--report-only", action="store_true", help="do not run anything; report what MLflow holds")
    args = parser.parse_args(argv)

    from grpo_lab.analysis.report import report_grid
    from grpo_lab.experiments import expand, run_grid

    spec = yaml.safe_load(args.grid.read_text())
    for item in args.set:
        key, _, value = item.partition("=")
        spec.setdefault("set", {})[key] = yaml.safe_load(value)
    if args.seeds is not None:
        spec["seeds"] = args.seeds
    grid = expand(spec, folder=args.grid.parent, default_name=args.grid.stem, where=str(args.grid))
    start = time.time()
    if not args.report_only:
        summary = run_grid(grid, jobs=args.jobs)
        if summary.failed:
            print(f"{len(summary.failed)} run(s) failed; the report covers the finished ones", file=sys.stderr)
    uri = grid.runs[0].config.tracking.resolved_uri
    command = shlex.join(["python", "analysis/deepseekmath_fig5.py"] + sys.argv[1:] if argv is None else
                         ["python", "analysis/deepseekmath_fig5.py", *argv])
    readme = report_grid(spec["name"], grid_file=args.grid, tracking_uri=uri, out_dir=args.out,
                         n_resamples=args.resamples, command=command)
    print(readme.read_text())
    print(f"written: {readme} ({time.time() - start:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
