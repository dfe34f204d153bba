"""`grpo-lab export`: a run's policy (any method's, the RL-trained one as much as the warm start) as
a Hugging Face model folder: the weights with `save_pretrained` (safetensors), the tokenizer, and the
run's config as `grpo_lab.yaml`, so `transformers.AutoModelForCausalLM.from_pretrained(folder)`
loads it and `grpo-lab eval folder` evaluates it on the run's task as the run did."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from grpo_lab.config import ConfigError
from grpo_lab.runs.sources import EXPORT_CONFIG, load_source


@dataclass
class Export:
    folder: Path
    source: str
    files: list
    config: Optional[object] = None  # the run's Config


def export(name: str, out: str | Path, *, tracking_uri: Optional[str] = None, overwrite: bool = False) -> Export:
    """Write the policy of `name` (an MLflow run id, a run folder or a checkpoint) to the folder `out`."""
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; name a folder to write the model into")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"--out {out} is not empty; name a new folder, or pass --overwrite to replace the model in it")
    source = load_source(name, tracking_uri=tracking_uri)
    if source.kind == "model":
        raise ConfigError(f"{name} is already a model folder; export takes a run id, a run folder or a checkpoint")
    out.mkdir(parents=True, exist_ok=True)
    from grpo_lab.models.adapters import merged

    policy = merged(source.policy)  # adapters folded into the weights: a plain transformers model
    policy.generation_config.pad_token_id = source.tokenizer.pad_token_id
    policy.generation_config.eos_token_id = source.tokenizer.eos_token_id
    policy.save_pretrained(out, safe_serialization=True)
    source.tokenizer.save_pretrained(out)
    (out / EXPORT_CONFIG).write_text(source.config.to_yaml())
    return Export(out, name, sorted(p.name for p in out.iterdir()), source.config)
