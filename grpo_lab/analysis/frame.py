"""Load the runs of a grid from MLflow into a tidy pandas frame.

Layers 1 and 2 of the analysis (**load -> tidy frame** -> estimators -> uncertainty -> plots).

Tidy frame: one row per (run, step) with columns

    run_id, grid, arm, seed (int), step (int), sft_hash, config_hash,
    <metric> ...        one column per metric (NaN at steps where it was not logged),
    param:<key> ...     the flattened config (strings, as MLflow stores them),
    factor:<key> ...    the factor values of the run's arm (from the grpo_lab.factors tag; a list or
                        mapping as JSON).

The MLflow conventions it relies on are those of the training side: tags ``grpo_lab.grid``,
``grpo_lab.arm``, ``grpo_lab.factors`` (JSON), ``grpo_lab.config_hash``, ``grpo_lab.sft_hash``,
``grpo_lab.status`` and param ``seed``.
"""

from __future__ import annotations

import json
from typing import Iterable, Sequence

import pandas as pd

from grpo_lab.conventions import default_tracking_uri  # noqa: E402
from grpo_lab.conventions import (  # noqa: F401
    ARM_TAG, CONFIG_HASH_TAG, FACTORS_TAG, GRID_FILE_TAG, GRID_TAG, SFT_HASH_TAG, STATUS_TAG,
)


PARAM_PREFIX = "param:"
FACTOR_PREFIX = "factor:"
ID_COLUMNS = ["run_id", "grid", "arm", "seed", "step", "sft_hash", "config_hash"]
BUDGET_METRICS = ("budget/samples", "budget/tokens", "budget/updates", "budget/prompts")


def resolve_tracking_uri(tracking_uri: str | None = None) -> str:
    """The argument, else ``$MLFLOW_TRACKING_URI``, else the workspace's store (grpo_lab.conventions)."""
    return tracking_uri or default_tracking_uri()


def _search_all(client, experiment_ids: list[str], filter_string: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs(
            experiment_ids, filter_string=filter_string, max_results=1000, page_token=token
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def grid_file_of(grid: str, tracking_uri: str | None = None):
    """The grid file a grid's runs were started from (their ``grpo_lab.grid_file`` tag), if it still
    exists; None otherwise."""
    from pathlib import Path

    import mlflow

    client = mlflow.tracking.MlflowClient(resolve_tracking_uri(tracking_uri))
    escaped = grid.replace("'", "\\'")
    experiment_ids = [e.experiment_id for e in client.search_experiments()]
    if not experiment_ids:
        return None
    for run in client.search_runs(experiment_ids, f"tags.\"{GRID_TAG}\" = '{escaped}'", max_results=50):
        path = run.data.tags.get(GRID_FILE_TAG)
        if path and Path(path).is_file():
            return Path(path)
    return None


def _find_runs(client, experiment_or_grid: str, include_unfinished: bool) -> list:
    """Runs tagged with the grid name in any experiment; else all runs of that experiment."""
    experiment_ids = [e.experiment_id for e in client.search_experiments()]
    if not experiment_ids:
        return []
    escaped = experiment_or_grid.replace("'", "\\'")
    runs = _search_all(client, experiment_ids, f"tags.\"{GRID_TAG}\" = '{escaped}'")
    if not runs:
        experiment = client.get_experiment_by_name(experiment_or_grid)
        if experiment is not None:
            runs = _search_all(client, [experiment.experiment_id], "")
    if not include_unfinished:
        runs = [
            run for run in runs
            if run.info.status == "FINISHED" and run.data.tags.get(STATUS_TAG) == "finished"
        ]
    return runs


def _metric_history(client, run_id: str, key: str) -> pd.Series:
    """Values of one metric indexed by step; the last-logged value wins on a repeated step."""
    history = sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
    series = pd.Series({int(m.step): float(m.value) for m in history}, dtype=float)
    series.index.name = "step"
    return series.rename(key)


def _seed_of(params: dict, tags: dict) -> int:
    for value in (params.get("seed"), tags.get("grpo_lab.seed")):
        if value is not None:
            try:
                return int(float(value))
            except ValueError:
                pass
    return -1  # unknown seed: validity checks will report it as a seed of its own


def _run_frame(client, run, grid: str, metrics: Sequence[str] | None) -> pd.DataFrame:
    tags, params = run.data.tags, run.data.params
    keys = sorted(run.data.metrics) if metrics is None else [
        key for key in metrics if key in run.data.metrics
    ]
    histories = [_metric_history(client, run.info.run_id, key) for key in keys]
    if histories:
        frame = pd.concat(histories, axis=1).sort_index().reset_index()
    else:
        frame = pd.DataFrame({"step": pd.Series([], dtype=int)})
    for key in metrics or ():
        if key not in frame:
            frame[key] = float("nan")
    try:
        factors = json.loads(tags.get(FACTORS_TAG, "{}")) or {}
    except json.JSONDecodeError:
        factors = {}
    arm = tags.get(ARM_TAG) or ",".join(f"{k}={v}" for k, v in factors.items()) or (
        tags.get("mlflow.runName", run.info.run_id)
    )
    identity = {
        "run_id": run.info.run_id,
        "grid": tags.get(GRID_TAG, grid),
        "arm": arm,
        "seed": _seed_of(params, tags),
        "sft_hash": tags.get(SFT_HASH_TAG),
        "config_hash": tags.get(CONFIG_HASH_TAG),
    }
    extra = {f"{PARAM_PREFIX}{k}": v for k, v in params.items()}
    extra.update({f"{FACTOR_PREFIX}{k}": json.dumps(v) if isinstance(v, (dict, list)) else str(v)
                  for k, v in factors.items()})
    constants = pd.DataFrame({column: [value] * len(frame)
                              for column, value in {**identity, **extra}.items()},
                             index=frame.index)
    return pd.concat([frame, constants], axis=1)


def load_runs(
    experiment_or_grid: str,
    *,
    tracking_uri: str | None = None,
    metrics: Iterable[str] | None = None,
    include_unfinished: bool = False,
) -> pd.DataFrame:
    """Tidy frame (one row per run per logged step) of the runs of a grid or experiment.

    Runs are those tagged ``grpo_lab.grid = experiment_or_grid`` in any experiment; if there
    are none, all runs of the MLflow experiment of that name. Unless ``include_unfinished``,
    only runs whose MLflow status is FINISHED *and* whose ``grpo_lab.status`` tag is
    ``finished`` are kept, so killed or still-running runs never enter a comparison.
    ``metrics=None`` loads every metric the runs logged.
    """
    from mlflow.tracking import MlflowClient  # import here: mlflow is slow to import

    client = MlflowClient(tracking_uri=resolve_tracking_uri(tracking_uri))
    metrics = None if metrics is None else list(metrics)
    runs = _find_runs(client, experiment_or_grid, include_unfinished)
    frames = [_run_frame(client, run, experiment_or_grid, metrics) for run in runs]
    frames = [frame for frame in frames if len(frame)]
    if not frames:
        return pd.DataFrame(columns=ID_COLUMNS + list(metrics or []))
    frame = pd.concat(frames, ignore_index=True)
    frame["seed"] = frame["seed"].astype(int)
    frame["step"] = frame["step"].astype(int)
    metric_columns = [c for c in frame.columns if c not in ID_COLUMNS and ":" not in c]
    prefixed = sorted(c for c in frame.columns if ":" in c)
    ordered = ID_COLUMNS + sorted(metric_columns) + prefixed
    return frame[ordered].sort_values(["arm", "seed", "step"]).reset_index(drop=True)


def final_values(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Each run's last logged (highest step, non-NaN) value of ``metric``.

    Returns columns arm, seed, value, run_id, one row per run that logged the metric, sorted by
    arm then seed.
    """
    if metric not in frame:
        raise KeyError(
            f"metric {metric!r} is not in the frame; available: "
            f"{sorted(c for c in frame.columns if c not in ID_COLUMNS and ':' not in c)}"
        )
    logged = frame.dropna(subset=[metric]).sort_values(["run_id", "step"])
    last = logged.groupby("run_id", sort=False).tail(1)
    result = last[["arm", "seed", metric, "run_id"]].rename(columns={metric: "value"})
    return result.sort_values(["arm", "seed"]).reset_index(drop=True)


def arm_values(finals: pd.DataFrame) -> dict[str, pd.Series]:
    """Per-arm Series of final values indexed by seed (from ``final_values``)."""
    return {
        arm: group.set_index("seed")["value"].sort_index()
        for arm, group in finals.groupby("arm", sort=True)
    }


def level_values(frame: pd.DataFrame) -> dict[str, dict[str, str]]:
    """The arms whose labels do not show a factor's value (a named level, ``task.rewards=with_format``,
    a numbered one, or a mapping labelled by its sub-keys), each with those factors' values as the
    ``factor:`` columns hold them: the key to such labels."""
    runs = frame.drop_duplicates("arm")
    out: dict[str, dict[str, str]] = {}
    for _, run in runs.sort_values("arm").iterrows():
        parts = str(run["arm"]).split(",")
        for column in (c for c in frame.columns if c.startswith(FACTOR_PREFIX)):
            key, value = column[len(FACTOR_PREFIX):], run[column]
            if isinstance(value, str) and f"{key}={value}" not in parts:
                out.setdefault(str(run["arm"]), {})[key] = value
    return out
