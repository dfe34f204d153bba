"""The task of a run: what `build_task` gets besides `TaskConfig.options()`, from the rest of the
config and the model: the ASCII mapping (the GSM8K preset maps text onto ASCII only for the
character tokenizer) and, with `task.chat`, the chat template of the model's tokenizer."""

from __future__ import annotations

from grpo_lab.config import Config, ConfigError
from grpo_lab.config.sections import DATA_TASKS


def task_options(config: Config, tokenizer=None) -> dict:
    """The keyword options of `build_task` for `config`'s task. `tokenizer`: the one the policy will
    use, where already loaded; else, for a chat template, the one of `model.path`."""
    options = config.task.options()
    tc = config.task
    if tc.name not in DATA_TASKS:
        return options
    options["ascii"] = tc.ascii if tc.ascii is not None else (tc.name == "gsm8k" and config.model.path is None)
    if tc.chat:
        from grpo_lab.models import chat_renderer, load_tokenizer

        if tokenizer is None:
            if config.model.path is None:
                raise ConfigError("task.chat is set but model.path is not: the character tokenizer of the tiny model "
                                  "has no chat template; set model.path to a local chat model, or task.chat: false")
            tokenizer = load_tokenizer(config.model.path, trust_remote_code=config.model.trust_remote_code)
        options["chat_template"] = chat_renderer(tokenizer, f"the tokenizer of {config.model.path}")
    return options


def build_task_of(config: Config, tokenizer=None):
    """The task `config` names, built with its data fixed by `task.data_seed`."""
    from grpo_lab.tasks import build_task

    return build_task(config.task.name, seed=config.task.data_seed, **task_options(config, tokenizer))
