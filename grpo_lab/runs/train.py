"""`run(config)`: one training run, the function `grpo-lab train`, grids and sweeps all call.

config -> recipe check -> task -> tokenizer + policy (cached SFT warm start) -> the method's
LightningModule (the engine bound to its recipe) -> Lightning Trainer with the MLflow logger ->
final evaluation, checkpoint and artifacts.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Callable, Optional

import torch

from grpo_lab.config import Config, ConfigError
from grpo_lab.config.precision import lightning_precision
from grpo_lab.runs.result import RunResult
from grpo_lab.runs.threads import ThreadShare


def quiet() -> None:
    """Keep Lightning's and MLflow's start-up chatter out of the way of the progress bar."""
    import logging

    import lightning  # noqa: F401  (first: importing it sets its loggers' levels, which must come after)

    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*IterableDataset.*")
    warnings.filterwarnings("ignore", ".*GPU available but not used.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    warnings.filterwarnings("ignore", ".*dataloader is not resumable.*")  # the data order is a function of the step
    warnings.filterwarnings("ignore", ".*module\\(s\\) in eval mode.*")  # the frozen reference model, on purpose
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        from grpo_lab.config import ConfigError

        raise ConfigError("train.device is cuda but no CUDA device is visible; use train.device: cpu")
    return name


def strategy_for(config: Config, module) -> str:
    """`train.strategy`, except that plain ddp with several trained models (PPO's actor and critic,
    each updated alone) lets DDP find the parameters an update does not use."""
    if config.train.strategy == "ddp" and len(module.trained_models()) > 1:
        return "ddp_find_unused_parameters_true"
    return config.train.strategy


def build_task_for(config: Config):
    from grpo_lab.runs.task_setup import build_task_of

    return build_task_of(config)


def run(config: Config, *, tags: Optional[dict] = None, progress: bool = True, log: bool = True,
        callbacks: Optional[list] = None, on_eval: Optional[Callable[[int, dict], None]] = None,
        resume_from: Optional[Path] = None, run_id: Optional[str] = None) -> RunResult:
    """Train one run end to end; returns its final metrics, its history and where things are.

    `on_eval(step, metrics)` is called after each evaluation (sweeps report to Optuna from it
    and may raise to prune). `resume_from` continues from a checkpoint, `run_id` in the same
    MLflow run.
    """
    from grpo_lab.methods import check_config

    recipe = check_config(config)  # before anything is built or written
    config = config.resolved()  # train.precision: auto made concrete, so the run records what it computed in
    quiet()
    with ThreadShare(config.train.threads) as share:
        return _run(config, share, tags=tags, progress=progress, log=log, callbacks=callbacks, on_eval=on_eval,
                    resume_from=resume_from, run_id=run_id, recipe=recipe)


def _run(config: Config, share, *, tags, progress, log, callbacks, on_eval, resume_from, run_id,
         recipe=None) -> RunResult:
    import lightning as L

    from grpo_lab.engine import module_class
    from grpo_lab.models.adapters import for_training
    from grpo_lab.runs import tracking
    from grpo_lab.runs.checkpoint import PeriodicCheckpoint, SafeCheckpointIO, checkpoint_dir, read_resume_info, run_dir
    from grpo_lab.runs.progress import EvalLines, StepProgress
    from grpo_lab.runs.reward_cache import FOLDER, reward_model_of, save_reward_model
    from grpo_lab.runs.threads import callback as follow_share
    from grpo_lab.runs.warm_start import warm_start

    device = resolve_device(config.train.device)
    if "fsdp" in config.train.strategy and device == "cpu":
        raise ConfigError(f"train.strategy is {config.train.strategy}, which Lightning runs on GPUs only; on CPUs use "
                          "train.strategy: ddp")
    out_dir = run_dir(config)
    if resume_from is not None:  # read first: a refused or damaged checkpoint stops the run before anything starts
        info = read_resume_info(resume_from)
        run_id = info["mlflow_run_id"] if run_id is None else run_id
    task = build_task_for(config)  # first: data the task refuses stops the run before anything is made
    if log:
        tracking.check_writable(config.tracking.resolved_uri, out_dir, config.sft.resolved_cache_dir)
    policy, tokenizer, sft_path = warm_start(config, task, progress=progress, device=device)
    share.update(force=True)  # the warm start trained with a thread count of its own
    reward_model = reward_model_of(config, share, train=_run, progress=progress)  # a learned reward (cached)
    policy = for_training(policy, config.model)
    torch.manual_seed(config.seed)
    module = module_class(config.method)(config, policy, tokenizer, task, reward_model=reward_model, recipe=recipe)
    module.on_eval = EvalLines(then=on_eval) if progress else on_eval
    logger = tracking.make_logger(config, tags=tags, run_id=run_id) if log else False
    callbacks = list(callbacks or []) + [follow_share(share)]
    if progress:
        callbacks.append(StepProgress(config.method, config.train.steps))
    if config.train.checkpoint_every > 0:
        callbacks.append(PeriodicCheckpoint(checkpoint_dir(config), config.train.checkpoint_every,
                                            run_id=logger.run_id if log else None))
    trainer = L.Trainer(
        max_epochs=1, accelerator=device, devices=config.train.devices, num_nodes=config.train.num_nodes,
        strategy=strategy_for(config, module), logger=logger, enable_checkpointing=False,
        callbacks=callbacks, enable_progress_bar=False, enable_model_summary=False,
        log_every_n_steps=1, num_sanity_val_steps=0, limit_val_batches=0,
        precision=lightning_precision(config.train.precision), plugins=[SafeCheckpointIO()],
    )
    try:
        trainer.fit(module, ckpt_path=str(resume_from) if resume_from else None)
    except BaseException as exc:  # the MLflow run says why it stopped; checkpoints already saved stay
        if log:
            tracking.mark_stopped(logger, exc)
        raise
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = out_dir / "final.ckpt"
    trainer.save_checkpoint(checkpoint)
    (out_dir / "config.yaml").write_text(config.to_yaml())
    if trainer.is_global_zero:
        save_reward_model(module, out_dir / FOLDER)  # a reward_model run's model, as a transformers folder
    initial = next((row for row in module.history if row["step"] == 0 and "eval/accuracy" in row), {})
    result = RunResult(run_id=logger.run_id if log else None, config=config, metrics=dict(module.last_eval),
                       initial=initial, history=module.history, checkpoint=checkpoint, sft_path=sft_path)
    if log and trainer.is_global_zero:  # under a multi-process strategy, process 0 writes the run
        tracking.finish(logger, config, checkpoint=checkpoint, sft_path=sft_path, final_metrics=result.metrics)
        logger.finalize("success")
    return result
