"""Build or load the policy: a tiny Qwen2 from a config, or any local Hugging Face causal LM."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase, Qwen2Config, Qwen2ForCausalLM

from grpo_lab.models.tokenizer import char_tokenizer
from grpo_lab.errors import GrpoLabError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class ModelError(GrpoLabError, ValueError):
    """A model or tokenizer that cannot be built or loaded; the message says how to fix it."""


def tiny_qwen2(cfg, tokenizer: PreTrainedTokenizerBase) -> Qwen2ForCausalLM:
    """A Qwen2 decoder (rotary positions, RMSNorm, SwiGLU, tied embeddings) sized by `cfg` (a ModelConfig)."""
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads or cfg.num_heads,
        max_position_embeddings=cfg.max_length,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        use_cache=True,
    )
    model = Qwen2ForCausalLM(config)
    return model.to(DTYPES[cfg.dtype])


def refuse_own_code(path: Path, trust_remote_code: bool, what: str = "the model") -> None:
    """A folder that needs its own Python code (`needs_own_code`) is refused in one line unless
    `model.trust_remote_code` says to run it."""
    needs = needs_own_code(path)
    if needs and not trust_remote_code:
        raise ModelError(f"{what} in {path} needs code of its own ({needs}), which runs when it loads; set "
                         "model.trust_remote_code: true only if you trust that folder")


def load_pretrained(path: str | Path, *, dtype: str = "float32", trust_remote_code: bool = False):
    """Load a causal LM and its tokenizer from a local folder (never from a hub).

    Weights come from the folder's safetensors where it has them (never from a pickle beside
    them). A folder that needs its own Python code (see `needs_own_code`) is refused unless
    `trust_remote_code` (`model.trust_remote_code`) says to run it.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelError(f"model.path {path} does not exist; point it at a local folder saved with save_pretrained, "
                         "or remove model.path to build the tiny model")
    if not (path / "config.json").exists():
        raise ModelError(f"model.path {path} has no config.json; it is not a Hugging Face model folder")
    refuse_own_code(path, trust_remote_code)
    safetensors = any(path.glob("*.safetensors"))
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=DTYPES[dtype],
                                                     use_safetensors=safetensors, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ModelError(f"could not load the model in {path}: {str(exc).splitlines()[0]}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    if tokenizer.eos_token_id is None:
        raise ModelError(f"the tokenizer in {path} has no EOS token; completions could never finish")
    return model, tokenizer


def load_tokenizer(path: str | Path, *, trust_remote_code: bool = False):
    """The tokenizer of a local model folder alone (for its chat template), with the checks of
    `load_pretrained`."""
    path = Path(path).expanduser()
    if not (path / "config.json").exists() and not (path / "tokenizer_config.json").exists():
        raise ModelError(f"model.path {path} holds no tokenizer (no tokenizer_config.json); point it at a local "
                         "folder saved with save_pretrained")
    refuse_own_code(path, trust_remote_code)
    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ModelError(f"could not load the tokenizer in {path}: {str(exc).splitlines()[0]}") from None


def chat_renderer(tokenizer, where: str = "the tokenizer"):
    """A function of a message list that returns the prompt the tokenizer's chat template makes of
    it, the assistant's turn opened (`add_generation_prompt`)."""
    if not getattr(tokenizer, "chat_template", None):
        raise ModelError(f"{where} has no chat template; set task.chat: false, or use a model whose tokenizer "
                         "has one (tokenizer_config.json chat_template)")

    def render(messages: list) -> str:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    return render


def needs_own_code(path: Path) -> Optional[str]:
    """Why the model folder `path` needs Python code of its own to load, or None.

    config.json or tokenizer_config.json naming classes in `auto_map` (modules of the folder), or
    a `model_type` transformers does not know.
    """
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    for name in ("config.json", "tokenizer_config.json"):
        file = path / name
        try:
            config = json.loads(file.read_text()) if file.exists() else {}
        except (OSError, ValueError):
            continue  # transformers says what is wrong with the file when it reads it
        if not isinstance(config, dict):
            continue
        auto_map = config.get("auto_map")
        if auto_map:
            classes = ", ".join(auto_map) if isinstance(auto_map, dict) else "classes"
            return f"{name} maps {classes} to the folder's modules (auto_map)"
        model_type = config.get("model_type")
        if name == "config.json" and model_type and model_type not in CONFIG_MAPPING:
            return f"{name} has model_type {model_type!r}, which transformers does not know"
    return None


def build_policy(cfg, alphabet: str):
    """The policy and tokenizer a run starts from (before any warm start)."""
    if cfg.path is not None:
        return load_pretrained(cfg.path, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code)
    tokenizer = char_tokenizer(alphabet)
    return tiny_qwen2(cfg, tokenizer), tokenizer
