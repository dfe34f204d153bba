"""The reward model of an RL run with a learned reward, and the folder a reward_model run writes.

`reward.model` is a folder (loaded as it is) or a reward-model config: then a `reward_model` run
with that config is trained once, from the run's warm start, and cached by its config hash beside
the warm starts (`<sft cache>/reward_model-<hash>/`), so every seed and arm of a grid scores with
the same reward model. A file lock makes parallel runs wait for one build. The folder is a
transformers sequence-classification model (models/reward.py) with the pairs it was trained on.
"""

from __future__ import annotations

import fcntl
import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Optional

from grpo_lab.config import Config, RewardConfig, RolloutConfig, TrainConfig

FOLDER = "reward_model"  # the HF folder in a reward_model run's folder


def reward_model_config(config: Config) -> Config:
    """The `reward_model` run that trains the reward model `config.reward.model` describes: the same
    task, model (without adapters) and warm start, pairs sampled like the run's samples (group size,
    length, temperature), `steps` updates, the optimizer's betas, weight decay and clip; its own
    seed. Nothing else of the RL run (seed, learning rate, method) changes it."""
    rm = config.reward.model_config
    ro, o = config.rollout, config.optim
    return replace(
        Config(), name=f"{config.name}-reward_model", method="reward_model", seed=rm.seed, task=config.task,
        model=replace(config.model, adapter=type(config.model.adapter)()), sft=config.sft,
        rollout=RolloutConfig(group_size=ro.group_size, max_new_tokens=ro.max_new_tokens, temperature=ro.temperature,
                              top_p=ro.top_p),
        optim=replace(type(o)(), beta1=o.beta1, beta2=o.beta2, weight_decay=o.weight_decay, grad_clip=o.grad_clip),
        reward=RewardConfig(), reward_model=rm,
        train=TrainConfig(steps=rm.steps, eval_every=rm.steps, device=config.train.device,
                          threads=config.train.threads, precision=config.train.precision),
        tracking=config.tracking)


def cached_reward_model(config: Config, share, *, train, progress: bool = True) -> Path:
    """The folder of the reward model `config.reward.model` (a config) describes, trained first (by
    `train`, runs.train's `_run`) if the cache does not hold it."""
    rm_config = reward_model_config(config)
    root = Path(config.sft.resolved_cache_dir)
    name = f"reward_model-{rm_config.config_hash()}"
    path = root / name
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (path / "done.json").exists():
            tmp = root / f"{name}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            built = replace(rm_config, train=replace(rm_config.train, out_dir=str(tmp)))
            result = train(built, share, tags=None, progress=progress, log=False, callbacks=None, on_eval=None,
                          resume_from=None, run_id=None)
            folder = result.checkpoint.parent / FOLDER
            (folder / "done.json").write_text(json.dumps({"config_hash": rm_config.config_hash(),
                                                          "eval": result.metrics}))
            shutil.rmtree(path, ignore_errors=True)
            folder.rename(path)
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def reward_model_of(config: Config, share, *, train, progress: bool = True):
    """The frozen reward model an RL run scores with (None when the reward is the task's); `train` runs
    a config (runs.train's `_run`) when a reward model has to be trained first."""
    if not config.reward.learned or config.method == "reward_model":
        return None
    from grpo_lab.models.reward import RewardModel

    folder = (config.reward.model if isinstance(config.reward.model, str)
              else cached_reward_model(config, share, train=train, progress=progress))
    return RewardModel.load(folder, dtype=config.model.dtype, trust_remote_code=config.model.trust_remote_code)


def save_reward_model(module, folder: Path) -> Optional[Path]:
    """A reward_model run's trained model as a transformers folder, with its pairs and held-out metrics."""
    if "reward_model" not in module.trained_models():
        return None
    model = module.reward_model
    model.pairs = list(module.source.train or [])
    return model.save_pretrained(folder, module.tokenizer, info={"config_hash": module.config.config_hash(),
                                                                 "eval": module.last_eval})
