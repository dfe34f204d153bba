"""One grid over many machines: every machine runs the same `grpo-lab grid FILE --storage URL`,
and an Optuna RDB storage (SQLite for one machine, PostgreSQL/MySQL for many) is the shared queue.

The grid's study (`grpo_lab_grid:<name>`) holds one enqueued trial per run MLflow does not hold as
finished, tagged with the run's config hash. A worker takes the next waiting trial (Optuna hands a
waiting trial to exactly one worker) and runs that grid run, resuming from its checkpoint if it has
one; while it runs, Optuna's heartbeat says it is alive. When a machine dies, its trials stop
beating: after `grace` seconds the next worker to look marks them failed and a copy goes back in
the queue (`RetryHeartbeatStaleTrialCallback`), so the run is not lost. A worker runs a trial only
when no other trial of the same run is running or complete, and the MLflow check before each run
skips what some machine has finished, so nothing runs twice. A run that fails with an error is
recorded as failed (trial and MLflow run) and not retried; running the command again retries it.
"""

from __future__ import annotations

import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable

from grpo_lab.conventions import redact
from grpo_lab.experiments.grid import Grid, GridSummary, load_grid, plan

RUN_ATTR, HASH_ATTR = "grid_run", "config_hash"


def open_queue(grid_name: str, storage: str, *, heartbeat: int = 30, grace: int = 120):
    """The grid's study in `storage`, with heartbeats and stale trials put back in the queue."""
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    from grpo_lab.experiments.sweep import SweepError

    if storage.startswith("sqlite:///"):
        Path(storage[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():  # the heartbeat is "experimental"
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for attempt in range(5):  # machines starting together race to create a new store's tables
            try:
                rdb = optuna.storages.RDBStorage(storage, heartbeat_interval=heartbeat, grace_period=grace,
                                                 heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback())
                break
            except Exception as exc:  # a bad URL, a missing driver, a database that is down
                if attempt < 4 and ("already exists" in str(exc) or "UNIQUE constraint" in str(exc)):
                    time.sleep(0.5 + attempt)
                    continue
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise SweepError(f"cannot open the grid queue {redact(storage)} ({first}); pass a SQLAlchemy URL "
                                 "such as sqlite:///grid.db or postgresql://user@host/db") from None
    return optuna.create_study(study_name=f"grpo_lab_grid:{grid_name}", storage=rdb, load_if_exists=True)


def enqueue_missing(grid: Grid, study) -> int:
    """Enqueue each run of `grid` that MLflow does not hold as finished and no trial covers yet."""
    from optuna.trial import TrialState

    covered = {t.user_attrs.get(HASH_ATTR) for t in study.get_trials(
        deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE))}
    added = 0
    for index, planned in enumerate(plan(grid)):
        if planned.done or planned.run.config_hash in covered:
            continue
        study.enqueue_trial({RUN_ATTR: index}, user_attrs={HASH_ATTR: planned.run.config_hash, RUN_ATTR: index})
        added += 1
    return added


def work(grid_file: str, storage: str, *, heartbeat: int, grace: int, progress: bool = False) -> dict:
    """One worker: take trials from the queue and run their grid runs until the queue is empty.
    Returns {"finished": [...], "failed": [...], "skipped": n} (picklable, for process pools)."""
    import optuna
    from optuna.trial import TrialState

    from grpo_lab.experiments.grid import _mark_killed, _run_one

    grid = load_grid(grid_file)
    study = open_queue(grid.name, storage, heartbeat=heartbeat, grace=grace)
    out: dict[str, Any] = {"finished": [], "failed": [], "skipped": 0}

    def objective(trial) -> float:
        if RUN_ATTR not in trial.user_attrs:  # no waiting trial was left: this one was made up
            trial.set_user_attr("empty", True)
            if any(RUN_ATTR in t.user_attrs for t in trial.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))):
                time.sleep(heartbeat)  # runs in flight elsewhere: if their machine died, theirs come back here
                optuna.storages.fail_stale_trials(trial.study)
            else:
                trial.study.stop()
            raise optuna.TrialPruned("the queue is empty")
        index = trial.suggest_int(RUN_ATTR, 0, len(grid.runs) - 1)
        run, config_hash = grid.runs[index], trial.user_attrs[HASH_ATTR]
        others = [t for t in trial.study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.COMPLETE))
                  if t.number != trial.number and t.user_attrs.get(HASH_ATTR) == config_hash]
        planned = plan(Grid(grid.name, [run]))[0]
        if others or planned.done:  # taken by another worker, or done
            out["skipped"] += 1
            raise optuna.TrialPruned("another worker has this run")
        _mark_killed(run.config, planned.stale)  # no live trial has it: MLflow runs of it left "running" are dead
        resume = str(planned.resume_from) if planned.resume_from else None
        result = _run_one(run.config.to_dict(), run.tags(grid.name, grid.path), resume, progress)
        if "error" in result:
            out["failed"].append((run.arm, run.seed, result["error"]))
            raise RuntimeError(result["error"])
        out["finished"].append((run.arm, run.seed, result["run_id"]))
        return 0.0

    study.optimize(objective, catch=(RuntimeError,))
    return out


def run_shared_grid(grid: Grid, storage: str, *, jobs: int = 1, progress: bool = False,
                    echo: Callable[[str], Any] = print, heartbeat: int | None = None,
                    grace: int | None = None) -> GridSummary:
    """Enqueue the grid's missing runs in the shared queue, then work on the queue with `jobs` workers
    until it is empty (other machines running the same command work on the same queue)."""
    from grpo_lab.runs.train import build_task_for, quiet
    from grpo_lab.runs.warm_start import warm_start

    if grid.path is None:
        raise ValueError("a shared grid runs from a grid file (its workers read it)")
    heartbeat = heartbeat or 30  # seconds between a worker's heartbeats
    grace = grace or 4 * heartbeat  # seconds of silence after which a worker counts as dead
    quiet()
    study = open_queue(grid.name, storage, heartbeat=heartbeat, grace=grace)
    added = enqueue_missing(grid, study)
    planned = plan(grid)
    echo(f"grid {grid.name} ({redact(storage)}): {sum(p.done for p in planned)} of {len(planned)} runs finished, "
         f"{added} added to the queue")
    built = set()
    for p in planned:  # this machine's warm starts first, so parallel workers never train the same one
        if not p.done and p.run.config.sft_hash() not in built:
            warm_start(p.run.config, build_task_for(p.run.config), progress=progress)
            built.add(p.run.config.sft_hash())
    kwargs = dict(heartbeat=heartbeat, grace=grace, progress=progress if jobs == 1 else False)
    if jobs <= 1:
        results = [work(str(grid.path), storage, **kwargs)]
    else:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
            results = list(pool.map(_work, [(str(grid.path), storage, kwargs)] * jobs))
    summary = GridSummary(planned)
    by_arm = {(r.arm, r.seed): r for r in grid.runs}
    for result in results:
        for arm, seed, run_id in result["finished"]:
            summary.finished.append((by_arm[(arm, seed)], {"run_id": run_id, "metrics": {}}))
            echo(f"finished {arm} seed {seed} (MLflow run {run_id})")
        for arm, seed, error in result["failed"]:
            summary.failed.append((by_arm[(arm, seed)], error))
            echo(f"FAILED {arm} seed {seed}: {error}")
    return summary


def _work(args: tuple) -> dict:
    grid_file, storage, kwargs = args
    return work(grid_file, storage, **kwargs)
