"""Where a trained policy comes from, for `grpo-lab eval` and `grpo-lab export`: an MLflow run id,
a run folder (`train.out_dir/<run>-<hash>/`), a checkpoint file, or a Hugging Face model folder
(an export, or any local causal LM).

A run's policy is rebuilt as the run built it (from its SFT warm start folder where it is still
there, else from `model` and the task's alphabet, or from `model.path`) and given the weights of the
checkpoint, read with `load_checkpoint` (tensors only). The config comes with the run: the
checkpoint holds it, an export holds it as `grpo_lab.yaml`; a model folder without one takes its
config from the command line.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import yaml

from grpo_lab.config import Config, ConfigError, load_config, merge
from grpo_lab.conventions import CHECKPOINT_TAG, client

EXPORT_CONFIG = "grpo_lab.yaml"  # the run's config, beside an exported model


@dataclass
class Source:
    """A policy to evaluate or export: its config, model, tokenizer, and what it was loaded from."""

    config: Config
    policy: object
    tokenizer: object
    kind: str  # "run" (an MLflow run id), "folder" (a run folder), "checkpoint", "model" (a model folder)
    label: str  # what the user named
    run_id: Optional[str] = None  # the MLflow run, where the source is one


def _config_from(base: dict, overrides: list[str], config_file: Optional[Path], *, fixed: Optional[dict] = None
                 ) -> Config:
    """`base`, then the YAML of `config_file`, then `fixed`, then the `key=value` overrides."""
    data = base
    if config_file is not None:
        if not Path(config_file).is_file():
            raise ConfigError(f"--config {config_file} does not exist; pass the path of a YAML file")
        data = merge(base, yaml.safe_load(Path(config_file).read_text()) or {})
    return load_config(None, overrides, base=merge(data, fixed or {}))


def run_checkpoint(run_id: str, tracking_uri: str) -> Path:
    """The final checkpoint an MLflow run names (tag `grpo_lab.checkpoint`)."""
    try:
        found = client(tracking_uri).get_run(run_id)
    except Exception:  # MLflow raises its own error type for an unknown id
        raise ConfigError(f"{run_id!r} is neither a file nor a folder, nor a run id in the MLflow store "
                          f"{tracking_uri}; pass a run folder, a checkpoint, a model folder or a run id "
                          "(--tracking-uri names the store)") from None
    path = found.data.tags.get(CHECKPOINT_TAG)
    if not path:
        raise ConfigError(f"MLflow run {run_id} has no final checkpoint (tag {CHECKPOINT_TAG}); it did not finish, "
                          "or it was not a training run")
    return Path(path)


def checkpoint_of_folder(folder: Path) -> Path:
    """A run folder's final checkpoint, else its newest periodic one."""
    for path in (folder / "final.ckpt", folder / "checkpoints" / "last.ckpt"):
        if path.is_file():
            return path
    raise ConfigError(f"{folder} holds no final.ckpt or checkpoints/last.ckpt, nor config.json; pass a run folder "
                      "(train.out_dir/<run>), a checkpoint file or a model folder saved with save_pretrained")


def policy_weights(checkpoint: dict) -> dict:
    """The policy's tensors of a Lightning checkpoint of the engine (keys `policy.*`)."""
    state = checkpoint.get("state_dict", {})
    weights = {k[len("policy."):]: v for k, v in state.items() if k.startswith("policy.")}
    if not weights:
        raise ConfigError("the checkpoint holds no policy weights (state_dict keys policy.*); it is not a grpo_lab "
                          "run's checkpoint")
    return weights


def rebuild_policy(config: Config, weights: dict):
    """The policy (and tokenizer) of a run with `config`, built as the run built it, holding `weights`."""
    from grpo_lab.models import build_policy, load_pretrained
    from grpo_lab.runs.task_setup import build_task_of

    warm = Path(config.sft.resolved_cache_dir) / config.sft_hash()
    if config.sft.steps > 0 and (warm / "done.json").exists():
        policy, tokenizer = load_pretrained(warm, dtype=config.model.dtype,
                                            trust_remote_code=config.model.trust_remote_code)
    else:
        alphabet = build_task_of(config).alphabet if config.model.path is None else ""
        policy, tokenizer = build_policy(config.model, alphabet)
    from grpo_lab.models.adapters import for_training

    policy = for_training(policy, config.model, checkpointing=False)  # the run's adapters, so that its weights fit
    missing, unexpected = policy.load_state_dict(weights, strict=False)
    if unexpected or [k for k in missing if not k.endswith("lm_head.weight")]:
        raise ConfigError(f"the checkpoint's policy does not fit the model its config builds (missing "
                          f"{missing[:3]}, unexpected {unexpected[:3]}); was the model folder or the task data changed?")
    if hasattr(policy, "tie_weights"):
        policy.tie_weights()
    return policy.eval(), tokenizer


def load_source(name: str, *, overrides: Optional[list[str]] = None, config_file: Optional[Path] = None,
                tracking_uri: Optional[str] = None) -> Source:
    """The policy, tokenizer and config named by `name` (a run id, run folder, checkpoint or model
    folder); `overrides` (`key=value`) and `config_file` change the config it comes with (an
    evaluation on another task or split)."""
    from grpo_lab.models import load_pretrained
    from grpo_lab.runs.checkpoint import load_checkpoint
    from grpo_lab.runs.train import quiet

    quiet()
    overrides = list(overrides or [])
    path = Path(name).expanduser()
    if path.is_dir() and (path / "config.json").exists():  # a model folder: an export, or any causal LM
        saved = path / EXPORT_CONFIG
        if saved.exists():
            config = _config_from(yaml.safe_load(saved.read_text()) or {}, overrides, config_file)
        else:  # any model folder: it is the model, whatever a --config file says
            config = _config_from({}, overrides, config_file, fixed={"model": {"path": str(path)}})
        policy, tokenizer = load_pretrained(path, dtype=config.model.dtype,
                                            trust_remote_code=config.model.trust_remote_code)
        return Source(config, policy.eval(), tokenizer, "model", name)
    run_id = None
    if path.is_dir():
        kind, checkpoint_path = "folder", checkpoint_of_folder(path)
    elif path.is_file():
        kind, checkpoint_path = "checkpoint", path
    elif path.suffix in (".ckpt", ".pt") or "/" in name:
        raise ConfigError(f"{name} does not exist; pass a run folder, a checkpoint, a model folder or an MLflow run id")
    else:
        from grpo_lab.config import Config as _Config

        uri = tracking_uri or _Config().tracking.resolved_uri
        kind, run_id, checkpoint_path = "run", name, run_checkpoint(name, uri)
    checkpoint = load_checkpoint(checkpoint_path)
    saved = (checkpoint.get("grpo_lab") or {}).get("config_yaml")
    if not saved:
        raise ConfigError(f"checkpoint {checkpoint_path} holds no config (grpo_lab.config_yaml); it is not a grpo_lab "
                          "run's checkpoint")
    trained = load_config(None, [], base=yaml.safe_load(saved))
    config = _config_from(trained.to_dict(), overrides, config_file)
    # the policy is the trained one, whatever the overrides say of the task or the evaluation
    policy, tokenizer = rebuild_policy(replace(config, model=trained.model, sft=trained.sft, task=trained.task),
                                       policy_weights(checkpoint))
    return Source(config, policy, tokenizer, kind, name, run_id)
