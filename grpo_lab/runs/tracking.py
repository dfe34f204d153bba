"""MLflow tracking: where runs go, what each run records, and checks made before training starts.

Every run is an MLflow run (through Lightning's MLFlowLogger) with the flattened config as params,
tags that place it in a grid (`grpo_lab.grid`, `grpo_lab.arm`, `grpo_lab.factors`), the hashes of
its config and warm start, the config YAML as an artifact and the final checkpoint's path.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from urllib.parse import urlparse

from grpo_lab.errors import GrpoLabError

from grpo_lab.conventions import (
    artifact_location,
    CHECKPOINT_TAG, CONFIG_HASH_TAG, ERROR_TAG, FAILED, FINISHED, INTERRUPTED, METHOD_TAG, RUNNING, SFT_CHECKPOINT_TAG,
    SFT_HASH_TAG, STATUS_TAG,
)

MIN_FREE_BYTES = 200 * 2**20


class TrackingError(GrpoLabError, RuntimeError):
    """The tracking store cannot be written; raised before any training."""


def sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:"):
        return None
    return Path(uri.split("sqlite:///", 1)[-1]) if "sqlite:///" in uri else None


def local_dir(uri: str) -> Path | None:
    if uri.startswith("sqlite:"):
        p = sqlite_path(uri)
        return (p.parent if p else None)
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return Path(parsed.path or uri)
    return None  # a server: checked when the first request is made


def check_writable(uri: str, *dirs: str | Path) -> None:
    """Fail fast, with the fix in the message, when the tracking store or an output folder cannot take a run.

    The tracking store's folder is made here (MLflow needs it to exist); the output folders are not,
    so that a run which stops before it starts leaves no empty run folder behind: where one does not
    exist yet, the nearest folder above it that does is tried instead."""
    store = local_dir(uri)
    targets = [(d, d == store) for d in [store, *map(Path, dirs)] if d is not None]
    for d, make in targets:
        d = d.resolve()
        probe = d
        while not make and not probe.exists() and probe != probe.parent:
            probe = probe.parent
        try:
            if make:
                d.mkdir(parents=True, exist_ok=True)
            elif not probe.is_dir():
                raise NotADirectoryError(f"{probe} is a file")
            with tempfile.NamedTemporaryFile(dir=probe, prefix=".grpo_lab_write_test"):
                pass
        except OSError as exc:
            raise TrackingError(f"cannot write to {d} ({exc.strerror or exc}); point MLFLOW_TRACKING_URI / "
                                "tracking.uri or train.out_dir at a writable folder") from None
        free = shutil.disk_usage(probe).free
        if free < MIN_FREE_BYTES:
            raise TrackingError(f"only {free // 2**20} MiB free on the disk holding {d}; free at least "
                                f"{MIN_FREE_BYTES // 2**20} MiB or write elsewhere")


def make_logger(config, *, tags: dict | None = None, run_id: str | None = None):
    from lightning.pytorch.loggers import MLFlowLogger

    uri = config.tracking.resolved_uri
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    all_tags = {CONFIG_HASH_TAG: config.config_hash(), SFT_HASH_TAG: config.sft_hash(), METHOD_TAG: config.method,
                STATUS_TAG: RUNNING, **(tags or {})}
    logger = MLFlowLogger(experiment_name=config.tracking.experiment, run_name=config.run_name, tracking_uri=uri,
                          artifact_location=artifact_location(uri),
                          tags=all_tags, run_id=run_id)
    if run_id is None:
        logger.log_hyperparams(config.flatten())
    else:  # a resumed run: running again, whatever stopped it before
        logger.experiment.update_run(run_id, status="RUNNING")
        logger.experiment.set_tag(run_id, STATUS_TAG, RUNNING)
    return logger


def mark_stopped(logger, exc: BaseException) -> None:
    """Tags a run that raised: `grpo_lab.status` failed (or interrupted) and `grpo_lab.error` the reason.

    Lightning has already set the MLflow status to FAILED; callers that stopped a run on purpose
    (a pruned trial) re-tag it afterwards.
    """
    interrupted = isinstance(exc, (KeyboardInterrupt, SystemExit))
    message = str(exc).splitlines()[0] if str(exc) else ""
    reason = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    try:
        client, run_id = logger.experiment, logger.run_id
        client.set_tag(run_id, STATUS_TAG, INTERRUPTED if interrupted else FAILED)
        client.set_tag(run_id, ERROR_TAG, reason[:5000])
        client.set_terminated(run_id, "KILLED" if interrupted else "FAILED")
    except Exception:  # the tracking store itself may be what failed; the original error matters more
        pass


def finish(logger, config, *, checkpoint: Path | None, sft_path: Path | None, final_metrics: dict) -> None:
    """Artifacts and closing tags of a finished run."""
    client, run_id = logger.experiment, logger.run_id
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "config.yaml").write_text(config.to_yaml())
        (Path(tmp) / "final_metrics.json").write_text(json.dumps(final_metrics, indent=2))
        client.log_artifact(run_id, str(Path(tmp) / "config.yaml"))
        client.log_artifact(run_id, str(Path(tmp) / "final_metrics.json"))
    if checkpoint is not None:
        client.set_tag(run_id, CHECKPOINT_TAG, str(checkpoint.resolve()))
    if sft_path is not None:
        client.set_tag(run_id, SFT_CHECKPOINT_TAG, str(Path(sft_path).resolve()))
    client.set_tag(run_id, STATUS_TAG, FINISHED)
