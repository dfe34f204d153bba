"""Experiments over many runs: grids (arms x seeds, resumable) and Optuna sweeps."""

from grpo_lab.experiments.grid import (
    Grid, GridError, GridRun, GridSummary, PlannedRun, arm_label, budget_of, expand, format_plan, load_grid, plan,
    run_grid,
)

__all__ = ["Grid", "GridError", "GridRun", "GridSummary", "PlannedRun", "arm_label", "budget_of", "expand",
           "format_plan", "load_grid", "plan", "run_grid"]
