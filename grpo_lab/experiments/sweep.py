"""Sweeps: an Optuna study over a declared search space, each trial the same in-process `run(config)`.

A sweep file (YAML):

    study: lr_clip                    # the Optuna study name (default: the file's stem)
    base: grpo_chain.yaml             # a config file (next to the sweep file, or from the cwd) or an inline mapping
    set: {train.steps: 100}           # optional dotted overrides of the base
    space:                            # dotted config keys
      optim.lr: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}
      loss.clip_low: {type: float, low: 0.1, high: 0.3, step: 0.05}
      optim.epochs: {type: int, low: 1, high: 4}
      loss.aggregation: {type: categorical, choices: [token_mean, seq_mean_token_mean]}
    objective: {metric: eval/accuracy, direction: maximize}   # the final evaluation, averaged over seeds
    seeds: [0]                        # or a count
    n_trials: 20                      # the study's total: running the command again continues up to it
    storage: sqlite:///optuna.db      # any SQLAlchemy URL (default: the workspace's optuna.db), e.g. postgresql://...
    sampler: tpe                      # tpe | random | grid, or {name: tpe, seed: 0, n_startup_trials: 5}
    pruner: median                    # median | hyperband | none, or {name: median, n_warmup_steps: 1}

Every evaluation of a trial is reported to Optuna (`trial.report`); the pruner may stop the trial
there (`optuna.TrialPruned`). Seed i's evaluation at RL step s is reported at step
`i * (train.steps + 1) + s`, so trials are compared at the same seed and step. Each trial's
training runs are MLflow runs nested under the study's run (tag `mlflow.parentRunId`) and tagged
`grpo_lab.sweep` and `grpo_lab.trial`. A trial that raises is recorded FAIL with its error (Optuna
user attr `error`, MLflow tag `grpo_lab.error`) and the study goes on.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import lightning as L

from grpo_lab.config import Config, ConfigError, with_overrides
from grpo_lab.conventions import (
    ERROR_TAG, FAILED, PARENT_TAG, PRUNED, STATUS_TAG, SWEEP_TAG, TRIAL_TAG, artifact_location, client, redact,
    workspace,
)
from grpo_lab.specs import SpecError, base_config, dotted, read_spec, seeds_of

SWEEP_KEYS = ("study", "base", "set", "space", "objective", "seeds", "n_trials", "storage", "sampler", "pruner")


def default_storage() -> str:
    """The workspace's SQLite Optuna store."""
    return f"sqlite:///{workspace() / 'optuna.db'}"


class SweepError(SpecError):
    """A sweep file that cannot run; the message says what to change."""


@dataclass
class Sweep:
    name: str
    base: Config
    space: dict  # dotted key -> {"type": float|int|categorical, ...}
    metric: str
    direction: str
    seeds: list
    n_trials: int
    storage: str
    sampler: dict  # {"name": ..., **kwargs}
    pruner: dict


def _named(value: Any, what: str, choices: tuple, where: str) -> dict:
    spec = {"name": value} if isinstance(value, str) else dict(value or {})
    if spec.get("name") not in choices:
        raise SweepError(f"{where}: {what} is {spec.get('name')!r}; choose one of {', '.join(choices)}")
    return spec


def _check_param(key: str, spec: Any, base: Config, where: str) -> dict:
    if isinstance(spec, list):
        spec = {"type": "categorical", "choices": spec}
    if not isinstance(spec, dict) or spec.get("type") not in ("float", "int", "categorical"):
        raise SweepError(f"{where}: space.{key} needs type float, int or categorical, "
                         "e.g. {type: float, low: 1.0e-5, high: 1.0e-3, log: true}")
    if spec["type"] == "categorical":
        if not isinstance(spec.get("choices"), list) or not spec["choices"]:
            raise SweepError(f"{where}: space.{key} is categorical and needs a non-empty list 'choices'")
        probe = spec["choices"][0]
    else:
        if "low" not in spec or "high" not in spec or not spec["low"] <= spec["high"]:
            raise SweepError(f"{where}: space.{key} needs low <= high")
        if spec.get("log") and spec.get("step"):
            raise SweepError(f"{where}: space.{key} cannot have both log and step (Optuna's rule)")
        probe = spec["low"]
    try:
        config = with_overrides(base, **{key: probe})
    except ConfigError as exc:
        if str(exc).startswith("unknown config key"):
            raise SweepError(f"{where}: space: {exc}") from None
        return spec
    from grpo_lab.methods import check_config

    try:
        check_config(config)
    except ConfigError as exc:
        if "never reads it" in str(exc) or "reads it only with" in str(exc):
            raise SweepError(f"{where}: space.{key}: {exc}") from None
    return spec


def load_sweep(path: str | Path, *, storage: Optional[str] = None, n_trials: Optional[int] = None) -> Sweep:
    path = Path(path)
    spec = read_spec(path, kind="sweep", keys=SWEEP_KEYS, example="experiments/sweep_example.yaml")
    where = str(path)
    base = base_config(spec, path.parent, where)
    space = spec.get("space") or {}
    if not isinstance(space, dict) or not space:
        raise SweepError(f"{where}: 'space' must map config keys to parameter specs")
    space = {k: _check_param(k, v, base, where) for k, v in space.items()}
    objective = spec.get("objective") or {}
    metric, direction = objective.get("metric", "eval/accuracy"), objective.get("direction", "maximize")
    if not str(metric).startswith("eval/"):
        raise SweepError(f"{where}: objective.metric is {metric!r}; use an evaluation metric such as eval/accuracy")
    if direction not in ("maximize", "minimize"):
        raise SweepError(f"{where}: objective.direction is {direction!r}; choose maximize or minimize")
    seeds = seeds_of(spec, base.seed, where)
    trials = n_trials if n_trials is not None else spec.get("n_trials", 20)
    if not isinstance(trials, int) or trials < 1:
        raise SweepError(f"{where}: n_trials is {trials!r}; it must be a positive int")
    sampler = _named(spec.get("sampler", "tpe"), "sampler", ("tpe", "random", "grid"), where)
    pruner = _named(spec.get("pruner", "median"), "pruner", ("median", "hyperband", "none"), where)
    if sampler["name"] == "grid":
        for key, p in space.items():
            if p["type"] == "float" and not p.get("step"):
                raise SweepError(f"{where}: the grid sampler needs space.{key} to be categorical or to have a step")
    return Sweep(name=str(spec.get("study") or path.stem), base=base, space=space, metric=metric,
                 direction=direction, seeds=seeds, n_trials=trials,
                 storage=storage or spec.get("storage") or default_storage(), sampler=sampler, pruner=pruner)


# ----- Optuna pieces -----------------------------------------------------------------------------
def grid_values(spec: dict) -> list:
    if spec["type"] == "categorical":
        return list(spec["choices"])
    step = spec.get("step") or 1
    values, v = [], spec["low"]
    while v <= spec["high"] + 1e-12:
        values.append(round(v, 12) if spec["type"] == "float" else int(v))
        v += step
    return values


def make_sampler(sweep: Sweep, *, trials_so_far: int = 0):
    """The sampler; a seeded one continuing a study is reseeded (seed + trials so far) so it does not
    draw the first trials' parameters again."""
    import optuna

    kwargs = {k: v for k, v in sweep.sampler.items() if k != "name"}
    if kwargs.get("seed") is not None and trials_so_far:
        kwargs["seed"] = int(kwargs["seed"]) + trials_so_far
    try:
        if sweep.sampler["name"] == "grid":
            return optuna.samplers.GridSampler({k: grid_values(p) for k, p in sweep.space.items()}, **kwargs)
        if sweep.sampler["name"] == "random":
            return optuna.samplers.RandomSampler(**kwargs)
        return optuna.samplers.TPESampler(**kwargs)
    except TypeError as exc:
        raise SweepError(f"sampler {sweep.sampler['name']}: {exc}") from None


def make_pruner(sweep: Sweep):
    import optuna

    kwargs = {k: v for k, v in sweep.pruner.items() if k != "name"}
    try:
        if sweep.pruner["name"] == "median":
            return optuna.pruners.MedianPruner(**kwargs)
        if sweep.pruner["name"] == "hyperband":
            kwargs.setdefault("max_resource", len(sweep.seeds) * (sweep.base.train.steps + 1))
            return optuna.pruners.HyperbandPruner(**kwargs)
        return optuna.pruners.NopPruner()
    except TypeError as exc:
        raise SweepError(f"pruner {sweep.pruner['name']}: {exc}") from None


def suggest(trial, key: str, spec: dict) -> Any:
    if spec["type"] == "float":
        return trial.suggest_float(key, spec["low"], spec["high"], log=bool(spec.get("log")), step=spec.get("step"))
    if spec["type"] == "int":
        return trial.suggest_int(key, spec["low"], spec["high"], log=bool(spec.get("log")), step=spec.get("step") or 1)
    return trial.suggest_categorical(key, spec["choices"])


def open_study(sweep: Sweep):
    import optuna

    if sweep.storage.startswith("sqlite:///"):  # a local file: its folder may not exist yet
        Path(sweep.storage[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # the heartbeat (which fails trials of killed processes) is "experimental"
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            storage = optuna.storages.RDBStorage(sweep.storage, heartbeat_interval=60, grace_period=120)
        except Exception as exc:  # a bad URL, a missing driver, a database that is down
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise SweepError(f"cannot open the Optuna storage {redact(sweep.storage)} ({first}); pass a "
                             "SQLAlchemy URL such as sqlite:///optuna.db or postgresql://user:pw@host/db") from None
    study = optuna.create_study(study_name=sweep.name, storage=storage, sampler=make_sampler(sweep),
                                pruner=make_pruner(sweep), direction=sweep.direction, load_if_exists=True)
    if study.trials:
        study.sampler = make_sampler(sweep, trials_so_far=len(study.trials))
    return study


# ----- MLflow pieces -----------------------------------------------------------------------------
def _client(config: Config):
    return client(config.tracking.resolved_uri)


def _experiment_id(store, name: str, uri: str) -> str:
    exp = store.get_experiment_by_name(name)
    return exp.experiment_id if exp is not None else store.create_experiment(name, artifact_location(uri))


def parent_run(sweep: Sweep, study) -> str:
    """The study's MLflow run (created once, its id kept in the study), marked running again."""
    from grpo_lab.runs import tracking

    config = sweep.base
    tracking.check_writable(config.tracking.resolved_uri, config.train.resolved_out_dir, config.sft.resolved_cache_dir)
    store = _client(config)
    run_id = study.user_attrs.get("mlflow_parent_run_id")
    if run_id is not None:
        try:
            store.get_run(run_id)
            store.update_run(run_id, status="RUNNING")
            return run_id
        except Exception:  # another tracking store than the study's first run used
            pass
    experiment = _experiment_id(store, config.tracking.experiment, config.tracking.resolved_uri)
    created = store.create_run(experiment, run_name=f"sweep-{sweep.name}",
                               tags={SWEEP_TAG: sweep.name, "grpo_lab.role": "study",
                                     "grpo_lab.storage": redact(sweep.storage), "grpo_lab.metric": sweep.metric,
                                     "grpo_lab.direction": sweep.direction})
    study.set_user_attr("mlflow_parent_run_id", created.info.run_id)
    return created.info.run_id


class _RunIdProbe(L.Callback):
    """Remembers the MLflow run id of the run in progress (to re-tag it when the trial is pruned)."""

    run_id: Optional[str] = None

    def on_fit_start(self, trainer, pl_module) -> None:
        self.run_id = getattr(trainer.logger, "run_id", None)


def objective_fn(sweep: Sweep, parent_id: str, *, progress: bool = False) -> Callable:
    import optuna

    from grpo_lab.runs import run

    store = _client(sweep.base)

    def objective(trial) -> float:
        params = {key: suggest(trial, key, spec) for key, spec in sweep.space.items()}
        tags = {PARENT_TAG: parent_id, SWEEP_TAG: sweep.name, TRIAL_TAG: str(trial.number),
                "grpo_lab.params": json.dumps(params)}
        probe, values = _RunIdProbe(), []
        steps = sweep.base.train.steps
        try:
            for i, seed in enumerate(sweep.seeds):
                probe.run_id = None
                config = with_overrides(sweep.base, **dotted(params), seed=seed,
                                        **{"tracking.run_name": f"{sweep.name}-t{trial.number:03d}-s{seed}"})

                def on_eval(step: int, metrics: dict, offset: int = i * (steps + 1)) -> None:
                    if sweep.metric in metrics:
                        trial.report(float(metrics[sweep.metric]), offset + step)
                        if trial.should_prune():
                            raise optuna.TrialPruned(f"pruned at step {step} of seed {seed}")

                result = run(config, tags={**tags, "grpo_lab.seed": str(seed)}, progress=progress,
                             callbacks=[probe], on_eval=on_eval)
                if sweep.metric not in result.metrics:
                    raise SweepError(f"objective.metric {sweep.metric!r} is not among the evaluation metrics "
                                     f"({', '.join(sorted(result.metrics))})")
                values.append(float(result.metrics[sweep.metric]))
        except optuna.TrialPruned as exc:
            if probe.run_id is not None:
                store.set_tag(probe.run_id, STATUS_TAG, PRUNED)
                store.set_tag(probe.run_id, ERROR_TAG, f"TrialPruned: {exc}")
                store.set_terminated(probe.run_id, "KILLED")
            raise
        except Exception as exc:
            message = str(exc).splitlines()[0] if str(exc) else ""
            reason = f"{type(exc).__name__}: {message}"[:5000]
            trial.set_user_attr("error", reason)
            if probe.run_id is None:  # it failed before training started: still one MLflow run says why
                failed = store.create_run(_experiment_id(store, sweep.base.tracking.experiment, sweep.base.tracking.resolved_uri),
                                          run_name=f"{sweep.name}-t{trial.number:03d}",
                                          tags={**tags, STATUS_TAG: FAILED, ERROR_TAG: reason})
                store.set_terminated(failed.info.run_id, "FAILED")
            raise
        value = sum(values) / len(values)
        trial.set_user_attr("seed_values", values)
        return value

    return objective


def run_sweep(sweep: Sweep, *, progress: bool = False, echo: Callable[[str], Any] = print):
    """Runs trials until the study holds `sweep.n_trials` finished ones (complete, pruned or failed)."""
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    from grpo_lab.runs.train import quiet

    quiet()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(sweep)
    ended = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    remaining = sweep.n_trials - len(study.get_trials(deepcopy=False, states=ended))
    echo(f"study {sweep.name} ({redact(sweep.storage)}): {sweep.n_trials - remaining} of {sweep.n_trials} trials "
         f"done; running {max(remaining, 0)}")
    if remaining <= 0:
        return study
    parent_id = parent_run(sweep, study)

    def report(study, trial) -> None:
        shown = {"COMPLETE": f"value {trial.value:.4f}" if trial.value is not None else "",
                 "PRUNED": f"at step {trial.last_step}", "FAIL": trial.user_attrs.get("error", "")}.get(trial.state.name, "")
        echo(f"trial {trial.number}: {trial.state.name.lower()} {shown} {shown_params(trial.params)}")

    store = _client(sweep.base)
    try:
        study.optimize(objective_fn(sweep, parent_id, progress=progress), n_trials=remaining, catch=(Exception,),
                       callbacks=[MaxTrialsCallback(sweep.n_trials, states=ended), report])
    finally:
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if done:
            best = study.best_trial
            store.log_metric(parent_id, "sweep/best_value", best.value, step=len(study.trials))
            store.set_tag(parent_id, "grpo_lab.best_params", json.dumps(best.params))
            store.set_tag(parent_id, "grpo_lab.best_trial", str(best.number))
        store.update_run(parent_id, status="FINISHED")
    return study


def shown_params(params: dict) -> str:
    """A trial's parameters for a person: floats to 6 significant digits, so that a stepped value
    Optuna computes as 0.15000000000000002 reads 0.15 (MLflow and Optuna keep the exact value)."""
    return json.dumps({key: float(f"{value:.6g}") if isinstance(value, float) else value
                       for key, value in params.items()})


def format_study(study) -> str:
    from optuna.trial import TrialState

    counts = {s.name.lower(): len(study.get_trials(deepcopy=False, states=(s,)))
              for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    lines = [f"study {study.study_name}: " + ", ".join(f"{n} {k}" for k, n in counts.items())]
    if counts["complete"]:
        best = study.best_trial
        lines.append(f"best: trial {best.number}, value {best.value:.4f}, params {shown_params(best.params)}")
    return "\n".join(lines)
