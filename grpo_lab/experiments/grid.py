"""Grids: a base config x factors x seeds, one MLflow run each, resumable by running the command again.

A grid file (YAML):

    name: aggregation            # the name every run is tagged with (default: the file's stem; `grid:` also works)
    base: grpo_chain.yaml        # a config file (next to the grid file, or from the cwd) or an inline mapping
    set: {train.steps: 100}      # optional dotted overrides applied to the base of every arm
    factors:                     # any dotted config keys, each a list of values or named levels
      loss.aggregation: [token_mean, seq_mean_token_mean]
      advantage.scale: {std: group, no_std: none}   # level name -> value (`levels` says how arms are labelled)
    mode: crossed                # crossed (every combination, the default) | zipped (i-th with i-th; or zip: true)
    seeds: [0, 1, 2]             # or a count: 3 -> 0, 1, 2
    budget: fixed                # fixed (default): refuse arms that see different numbers of prompts or samples | free
    warm_start: shared           # shared (default): refuse arms whose SFT warm starts differ | per_arm
    metric: eval/accuracy        # metric, claims, higher_is_better, baseline: read by `grpo-lab report`

Every run is tagged `grpo_lab.grid`, `grpo_lab.arm` (`key=value,key=value`), `grpo_lab.factors`
(JSON) and `grpo_lab.config_hash`. A run is done when MLflow holds a run of this grid with its
config hash and `grpo_lab.status = finished`; `run_grid` runs only the others, resuming each from
its last checkpoint where it has one (`train.checkpoint_every`), so a killed grid loses at most
the steps since its runs' last checkpoints. Warm starts are built once, before any run starts.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from itertools import product
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Optional

from grpo_lab.config import Config, ConfigError, with_overrides
from grpo_lab.conventions import (
    ARM_TAG, CONFIG_HASH_TAG, FACTORS_TAG, FINISHED, GRID_FILE_TAG, GRID_TAG, KILLED, RUNNING, STATUS_TAG, client,
)
from grpo_lab.experiments.levels import arm_label, factor_levels  # noqa: F401 (arm_label: exported from here)
from grpo_lab.specs import SpecError, base_config, dotted, read_spec, seeds_of

GRID_KEYS = ("name", "grid", "base", "set", "factors", "mode", "zip", "seeds", "budget", "warm_start")
REPORT_KEYS = ("metric", "claims", "higher_is_better", "baseline")  # for `grpo-lab report`; the runner ignores them


class GridError(SpecError):
    """A grid file that cannot run; the message says what to change."""


@dataclass(frozen=True)
class GridRun:
    arm: str  # "method=grpo,loss.aggregation=token_mean"
    factors: dict  # {"method": "grpo", "loss.aggregation": "token_mean"}
    seed: int
    config: Config

    @property
    def config_hash(self) -> str:
        return self.config.config_hash()

    def tags(self, grid: str, grid_file: Optional[Path] = None) -> dict:
        tags = {GRID_TAG: grid, ARM_TAG: self.arm, FACTORS_TAG: json.dumps(self.factors)}
        return {**tags, GRID_FILE_TAG: str(grid_file.resolve())} if grid_file is not None else tags


@dataclass
class Grid:
    name: str
    runs: list[GridRun]
    budget: str = "fixed"
    path: Optional[Path] = None  # the grid file, when the grid came from one


@dataclass
class PlannedRun:
    run: GridRun
    done: bool
    resume_from: Optional[Path] = None  # the run's last checkpoint, where it has one
    resume_step: Optional[int] = None
    stale: list = field(default_factory=list)  # MLflow run ids left 'running' by a killed process


@dataclass
class GridSummary:
    planned: list[PlannedRun]
    finished: list[tuple[GridRun, dict]] = field(default_factory=list)  # (run, {"run_id", "metrics"})
    failed: list[tuple[GridRun, str]] = field(default_factory=list)

    @property
    def skipped(self) -> int:
        return sum(p.done for p in self.planned)


def load_grid(path: str | Path) -> Grid:
    """Reads and expands a grid file, checking that its arms are comparable."""
    path = Path(path)
    spec = read_spec(path, kind="grid", example="experiments/grid_example.yaml")
    grid = expand(spec, folder=path.parent, default_name=path.stem, where=str(path))
    grid.path = path
    return grid


def expand(spec: dict, *, folder: Path = Path("."), default_name: str = "grid", where: str = "grid") -> Grid:
    from grpo_lab.methods import check_config

    if not isinstance(spec, dict):
        raise GridError(f"{where} must hold a mapping (grid, base, factors, seeds, ...)")
    unknown = [k for k in spec if k not in GRID_KEYS + REPORT_KEYS]
    if unknown:
        raise GridError(f"{where}: unknown grid key {unknown[0]!r}; grid files take {', '.join(GRID_KEYS + REPORT_KEYS)}")
    name = str(spec.get("name") or spec.get("grid") or default_name)
    base = base_config(spec, folder, where)
    factors = spec.get("factors") or {}
    if not isinstance(factors, dict):
        raise GridError(f"{where}: 'factors' must map config keys to lists of values or to named levels, e.g. "
                        "loss.aggregation: [a, b]")
    try:
        factors = {key: factor_levels(key, levels, where) for key, levels in factors.items()}
    except SpecError as exc:
        raise GridError(str(exc)) from None
    mode = spec.get("mode", "zipped" if spec.get("zip") else "crossed")
    if mode == "crossed":
        combos = [dict(zip(factors, levels)) for levels in product(*factors.values())]
    elif mode == "zipped":
        lengths = {k: len(v) for k, v in factors.items()}
        if len(set(lengths.values())) > 1:
            raise GridError(f"{where}: zipped factors need lists of one length, got {lengths}")
        combos = [dict(zip(factors, levels)) for levels in zip(*factors.values())]
    else:
        raise GridError(f"{where}: mode is {mode!r}; choose crossed or zipped")
    seeds = seeds_of(spec, base.seed, where)
    if "seed" in factors:
        raise GridError(f"{where}: 'seed' is not a factor; list the seeds under 'seeds'")
    runs = []
    for combo in combos:
        arm = ",".join(level.label for level in combo.values())
        values = {key: level.value for key, level in combo.items()}
        for seed in seeds:
            run_name = re.sub(r"[^A-Za-z0-9_.-]+", "_", "-".join([name, *(level.name for level in combo.values()),
                                                                   f"s{seed}"]))
            try:
                config = with_overrides(base, **dotted(values), seed=seed, **{"tracking.run_name": run_name})
                check_config(config)
            except ConfigError as exc:
                raise GridError(f"{where}: arm {arm}: {exc}") from None
            runs.append(GridRun(arm, values, seed, config))
    hashes = [r.config_hash for r in runs]
    if len(set(hashes)) != len(hashes):
        raise GridError(f"{where}: two runs have the same config; remove repeated factor values or seeds")
    grid = Grid(name, runs, budget=spec.get("budget", "fixed"))
    _check_comparable(grid, spec.get("warm_start", "shared"), where)
    return grid


def budget_of(config: Config) -> dict:
    prompts = config.rollout.prompts_per_step * config.train.steps
    return {"prompts": prompts, "samples": prompts * config.rollout.group_size}


def _check_comparable(grid: Grid, warm_start: str, where: str) -> None:
    if grid.budget not in ("fixed", "free"):
        raise GridError(f"{where}: budget is {grid.budget!r}; choose fixed or free")
    if warm_start not in ("shared", "per_arm"):
        raise GridError(f"{where}: warm_start is {warm_start!r}; choose shared or per_arm")
    budgets = {r.arm: budget_of(r.config) for r in grid.runs}
    if grid.budget == "fixed" and len({json.dumps(b) for b in budgets.values()}) > 1:
        shown = "; ".join(f"{arm}: {b['prompts']} prompts, {b['samples']} samples" for arm, b in budgets.items())
        raise GridError(f"{where}: arms get different budgets ({shown}); make rollout.prompts_per_step x "
                        "rollout.group_size x train.steps equal, or set budget: free")
    if warm_start == "shared" and len({r.config.sft_hash() for r in grid.runs}) > 1:
        raise GridError(f"{where}: the factors change the SFT warm start (task, model or sft keys), so arms would "
                        "start from different weights; set warm_start: per_arm to allow it")


# ----- what MLflow already holds ----------------------------------------------------------------
def _client(config: Config):
    return client(config.tracking.resolved_uri)


def grid_runs_in_mlflow(grid: Grid) -> list:
    """Every MLflow run tagged with this grid's name, in the experiments its runs log to."""
    if not grid.runs:
        return []
    found = []
    for uri, experiment in {(r.config.tracking.resolved_uri, r.config.tracking.experiment) for r in grid.runs}:
        store = _client(next(r.config for r in grid.runs if r.config.tracking.resolved_uri == uri))
        exp = store.get_experiment_by_name(experiment)
        if exp is None:
            continue
        token = None
        while True:
            page = store.search_runs([exp.experiment_id], f"tags.`{GRID_TAG}` = '{grid.name}'", max_results=1000,
                                      page_token=token)
            found.extend(page)
            token = page.token
            if not token:
                break
    return found


def plan(grid: Grid) -> list[PlannedRun]:
    from grpo_lab.runs.checkpoint import last_checkpoint, read_resume_info

    by_hash: dict[str, list] = {}
    for mlrun in grid_runs_in_mlflow(grid):
        by_hash.setdefault(mlrun.data.tags.get(CONFIG_HASH_TAG), []).append(mlrun)
    planned = []
    for r in grid.runs:
        seen = by_hash.get(r.config_hash, [])
        done = any(m.data.tags.get(STATUS_TAG) == FINISHED for m in seen)
        item = PlannedRun(r, done)
        if not done:
            item.resume_from = last_checkpoint(r.config)
            resume_id = None
            if item.resume_from is not None:
                info = read_resume_info(item.resume_from)
                item.resume_step, resume_id = info["step"], info["mlflow_run_id"]
            item.stale = [m.info.run_id for m in seen
                          if m.data.tags.get(STATUS_TAG) == RUNNING and m.info.run_id != resume_id]
        planned.append(item)
    return planned


def format_plan(grid: Grid, planned: list[PlannedRun]) -> str:
    done = sum(p.done for p in planned)
    arms = len({p.run.arm for p in planned})
    lines = [f"grid {grid.name}: {len(planned)} runs ({arms} arms x {len(planned) // max(arms, 1)} seeds), "
             f"{done} finished, {len(planned) - done} to run"]
    for p in planned:
        state = "done" if p.done else (f"resume@{p.resume_step}" if p.resume_from else "missing")
        lines.append(f"  {state:<10} {p.run.arm}  seed {p.run.seed}  {p.run.config_hash}")
    return "\n".join(lines)


# ----- running -----------------------------------------------------------------------------------
def _mark_killed(config: Config, run_ids: list[str]) -> None:
    """Runs a killed process left 'running' and that nothing will resume: say so in MLflow."""
    if not run_ids:
        return
    store = _client(config)
    for run_id in run_ids:
        store.set_tag(run_id, STATUS_TAG, KILLED)
        store.set_terminated(run_id, "KILLED")


def _create_experiments(configs: list[Config]) -> None:
    """Create the MLflow experiments the runs log to, once, before parallel workers would race to
    create the same one (the loser's run fails)."""
    for uri, name in {(c.tracking.resolved_uri, c.tracking.experiment) for c in configs}:
        store = client(uri)
        if store.get_experiment_by_name(name) is None:
            store.create_experiment(name)


def _run_one(config_dict: dict, tags: dict, resume_from: Optional[str], progress: bool) -> dict:
    """One grid run in this process (a pool worker or the grid's own); returns a picklable summary."""
    from grpo_lab.config import from_dict
    from grpo_lab.runs import run

    try:
        result = run(from_dict(config_dict), tags=tags, progress=progress,
                     resume_from=Path(resume_from) if resume_from else None)
    except Exception as exc:  # one failed arm does not stop the grid; its MLflow run says why
        message = str(exc).splitlines()[0] if str(exc) else ""
        return {"error": f"{type(exc).__name__}: {message}"}
    return {"run_id": result.run_id, "metrics": result.metrics}


def run_grid(grid: Grid, *, jobs: int = 1, progress: bool = False,
             echo: Callable[[str], Any] = print) -> GridSummary:
    """Runs the grid's missing runs (`jobs` at a time, in separate processes when jobs > 1)."""
    from grpo_lab.runs.train import build_task_for, quiet
    from grpo_lab.runs.warm_start import warm_start

    planned = plan(grid)
    summary = GridSummary(planned)
    todo = [p for p in planned if not p.done]
    echo(f"grid {grid.name}: {len(planned) - len(todo)} of {len(planned)} runs already finished; running {len(todo)}")
    if not todo:
        return summary
    for p in todo:
        _mark_killed(p.run.config, p.stale)
    quiet()
    built = set()
    for p in todo:  # warm starts first, once each, so parallel runs never train the same one
        if p.run.config.sft_hash() not in built:
            warm_start(p.run.config, build_task_for(p.run.config), progress=progress)
            built.add(p.run.config.sft_hash())

    def record(p: PlannedRun, out: dict) -> None:
        n = len(summary.finished) + len(summary.failed) + 1
        if "error" in out:
            summary.failed.append((p.run, out["error"]))
            echo(f"[{n}/{len(todo)}] FAILED {p.run.arm} seed {p.run.seed}: {out['error']}")
        else:
            summary.finished.append((p.run, out))
            shown = ", ".join(f"{k}={v:.3f}" for k, v in out["metrics"].items() if k in ("eval/accuracy",
                                                                                       "eval/greedy_accuracy"))
            echo(f"[{n}/{len(todo)}] {p.run.arm} seed {p.run.seed}: {shown} (MLflow run {out['run_id']})")

    def job(p: PlannedRun) -> tuple:  # each worker takes its share of the cores (runs/threads.py)
        return (p.run.config.to_dict(), p.run.tags(grid.name, grid.path), str(p.resume_from) if p.resume_from else None,
                False)

    if jobs <= 1:
        for p in todo:
            record(p, _run_one(*job(p)[:3], progress))
        return summary
    _create_experiments([p.run.config for p in todo])
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(_run_one, *job(p)): p for p in todo}
        for future in as_completed(futures):
            record(futures[future], future.result())
    return summary
