"""DeepSeekMath Fig. 5 at small scale: run the grid experiments/deepseekmath_fig5.yaml (what MLflow
does not hold yet) and write results/deepseekmath_fig5/ (claims, CIs, Holm-corrected tests,
verdicts, learning curves, final-metric plots).

Arms: RFT, online RFT, GRPO (outcome), GRPO (process supervision) from one SFT checkpoint, 5
seeds. Each run is an MLflow run tagged grpo_lab.grid / grpo_lab.arm / grpo_lab.factors; a killed
script resumes by running it again. The same as `grpo-lab grid experiments/deepseekmath_fig5.yaml
--jobs 2` then `grpo-lab report deepseekmath_fig5`, plus --set overrides for a quick check.

    python analysis/deepseekmath_fig5.py [--jobs 2] [--seeds 0 1 2 3 4] [--set KEY=VALUE ...] [--report-only]
    python analysis/deepseekmath_fig5.py --quick     # tiny model, 20 steps, 2 seeds: the whole path in minutes
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reproduction import grid_spec, parser, run_and_report  # noqa: E402

GRID = Path("experiments/deepseekmath_fig5.yaml")
QUICK = {"train.steps": 20, "train.eval_every": 10}


def main(argv: list[str] | None = None) -> None:
    args = parser(__doc__, GRID).parse_args(argv)
    spec, path = grid_spec(args, QUICK)
    report, _ = run_and_report(args, spec, path, "analysis/deepseekmath_fig5.py", argv)
    print(report.path.read_text())
    print(f"written: {report.path}", file=sys.stderr)


if __name__ == "__main__":
    main()
