"""The warm start's hash holds exactly what the warm start reads: every key in `Config.sft_hash`
changes what the warm start trains on (its examples, its tokenizer, its initial weights) or the
weights it ends with, and every other key leaves the hash as it is. A key added to the config must
be added to one of the tables below, or the audit fails."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from grpo_lab.config import Config, ConfigError, from_dict, with_overrides
from grpo_lab.config.root import TINY_MODEL_ONLY, is_sft_key
from tiny_models import tiny_llama, write_jsonl

BASE = {
    "task": {"name": "chain", "digits": 1, "min_terms": 2, "max_terms": 3, "train_size": 40, "eval_size": 8},
    "model": {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "intermediate_size": 32, "max_length": 32},
    "sft": {"steps": 3, "batch_size": 4, "warmup_steps": 2, "lr": 1e-2},
    "train": {"precision": "32-true"},
}
DATA = {"task.name": "dataset", "task.path": "{data}/rows.jsonl", "task.eval_size": 4}
TARGETS = {"task.name": "dataset", "task.path": "{data}/targets.jsonl", "task.eval_size": 2,
           "task.columns": {"target": "short"}}
SPLITS = {"task.name": "dataset", "task.path": "{data}/splits"}
SUBSETS = {"task.name": "dataset", "task.path": "{data}/subsets", "task.subset": "a", "task.eval_size": 2}
LLAMA = {"model.path": "{llama}"}

# hashed key -> (the config it is varied in, the change)
HASHED = {
    "task.name": ({}, {"task.name": "addition"}),
    "task.data_seed": ({}, {"task.data_seed": 1}),
    "task.digits": ({}, {"task.digits": 2}),
    "task.min_terms": ({}, {"task.min_terms": 3}),
    "task.max_terms": ({}, {"task.max_terms": 4}),
    "task.train_size": ({}, {"task.train_size": 41}),
    "task.eval_size": ({}, {"task.eval_size": 9}),
    "task.kwargs": ({}, {"task.kwargs": {"max_terms": 4}}),
    "task.path": (DATA, {"task.path": "{data}/other.jsonl"}),
    "task.columns": (DATA, {"task.columns": {"prompt": "alt"}}),
    "task.template": (DATA, {"task.template": "Q: {prompt}"}),
    "task.train_split": (SPLITS, {"task.train_split": "train2"}),
    "task.eval_split": (SPLITS, {"task.eval_split": "dev"}),  # its rows' characters join the alphabet
    "task.subset": (SUBSETS, {"task.subset": "b"}),
    "task.ascii": (DATA, {"task.ascii": True}),  # the rows hold a non-ASCII character
    # the reference answers reach the warm start through the character tokenizer's alphabet
    "task.extractor": (TARGETS, {"task.extractor": "text"}),
    "task.pattern": ({**TARGETS, "task.extractor": "regex", "task.pattern": "([0-9])"}, {"task.pattern": "(\\S+)$"}),
    "task.chat": ({**DATA, **LLAMA}, {"task.chat": True}),
    "task.system_prompt": ({**DATA, **LLAMA, "task.chat": True}, {"task.system_prompt": "Be brief."}),
    "model.path": ({}, LLAMA),
    "model.hidden_size": ({}, {"model.hidden_size": 32}),
    "model.num_layers": ({}, {"model.num_layers": 2}),
    "model.num_heads": ({}, {"model.num_heads": 4}),
    "model.num_kv_heads": ({}, {"model.num_kv_heads": 1}),
    "model.intermediate_size": ({}, {"model.intermediate_size": 48}),
    "model.max_length": ({}, {"model.max_length": 40}),
    "model.dtype": ({}, {"model.dtype": "bfloat16"}),
    "sft.steps": ({}, {"sft.steps": 4}),
    "sft.lr": ({}, {"sft.lr": 3e-3}),
    "sft.batch_size": ({}, {"sft.batch_size": 5}),
    "sft.warmup_steps": ({}, {"sft.warmup_steps": 1}),
    "sft.weight_decay": ({}, {"sft.weight_decay": 0.5}),
    "sft.grad_clip": ({}, {"sft.grad_clip": 0.01}),
    "sft.seed": ({}, {"sft.seed": 1}),
}

# keys outside the hash whose obvious change is invalid alone: the change, with what it needs
NOT_HASHED = {
    "name": {"name": "other"},
    "method": {"method": "ppo"},
    "task.compare": None,  # a data task's keys: see the data-task cases below
    "task.tolerance": None,
    "task.rewards": {"task.rewards": [{"fn": "correct", "weight": 1.0}, {"fn": "format", "weight": 0.1}]},
    "model.trust_remote_code": None,  # only with model.path: see the model.path cases below
    "model.adapter.type": {"model.adapter.type": "lora"},
    "model.adapter.target_modules": {"model.adapter.target_modules": ["q_proj"]},
    "model.adapter.dropout": {"model.adapter.dropout": 0.1},
    "sft.cache_dir": {"sft.cache_dir": "/elsewhere"},
    "advantage.estimator": {"advantage.estimator": "rloo"},
    "advantage.scale": {"advantage.scale": "none"},
    "loss.clip_high": {"loss.clip_high": 0.28},
    "loss.dual_clip": {"loss.dual_clip": 3.0},
    "loss.level": {"loss.level": "sequence"},
    "loss.aggregation": {"loss.aggregation": "token_mean"},
    "loss.norm": {"loss.norm": 8.0},
    "loss.kl_estimator": {"loss.kl_estimator": "k2"},
    "loss.kl_placement": {"loss.kl_placement": "reward", "loss.kl_beta": 0.1},
    "loss.objective": {"loss.objective": "cispo"},
    "loss.rft_normalise": {"loss.rft_normalise": "kept"},
    "offpolicy.correction": {"offpolicy.correction": "tis"},
    "offpolicy.sampler_dtype": {"offpolicy.sampler_dtype": "bfloat16"},
    "offpolicy.clip_against": {"offpolicy.clip_against": "proximal"},
    "offpolicy.weight_level": {"offpolicy.weight_level": "token"},
    "offpolicy.cap_mode": {"offpolicy.cap_mode": "mask"},
    "offpolicy.cap_low": {"offpolicy.cap_low": 0.5},
    "offpolicy.staleness": {"offpolicy.staleness": 1},
    "offpolicy.cap": {"offpolicy.cap": 3.0},
    "offpolicy.eta": {"offpolicy.eta": 5},
    "rollout.max_sampling_rounds": {"rollout.max_sampling_rounds": 4},
    "rollout.overlong_buffer": {"rollout.overlong_buffer": 2},
    "rollout.top_p": {"rollout.top_p": 0.9},
    "optim.minibatches": {"optim.minibatches": 2},
    "train.out_dir": {"train.out_dir": "/elsewhere"},
    "train.device": {"train.device": "cpu"},
    "train.strategy": {"train.strategy": "ddp"},
    "train.devices": {"train.devices": 2},
    "train.num_nodes": {"train.num_nodes": 2},
    "train.precision": {"train.precision": "bf16-mixed"},
    "tracking.uri": {"tracking.uri": "sqlite:////elsewhere/mlflow.db"},
    "tracking.experiment": {"tracking.experiment": "other"},
    "tracking.run_name": {"tracking.run_name": "other"},
    "reward.model": {"reward.model": {"pairs": "policy", "prompts": 16, "steps": 2}},
    "reward_model.pairs": {"reward_model.pairs": "dataset"},
    "reward_model.chosen": {"reward_model.chosen": "good"},
    "reward_model.rejected": {"reward_model.rejected": "bad"},
    "iterative.steps_per_iteration": {"iterative.steps_per_iteration": 5},
    "iterative.replay_fraction": {"iterative.replay_fraction": 0.5},
    "reference.mixup_alpha": {"reference.mixup_alpha": 0.5},
}
# what the warm start does not read once model.path names the model: the tiny model's shape, the
# answer extractor (only the character tokenizer's alphabet holds the answers), trust_remote_code
# the verifier's keys of a data task, which the warm start (trained on the reference completions) never reads
OF_DATA_TASKS = {"task.compare": {"task.compare": "numeric"}, "task.tolerance": {"task.tolerance": 0.5},
                 "task.rewards": {"task.rewards": [{"fn": "correct", "compare": "numeric"}]}}
WITH_MODEL_PATH = {
    "model.hidden_size": {"model.hidden_size": 64},
    "model.num_layers": {"model.num_layers": 3},
    "model.num_heads": {"model.num_heads": 8},
    "model.num_kv_heads": {"model.num_kv_heads": 1},
    "model.intermediate_size": {"model.intermediate_size": 100},
    "model.max_length": {"model.max_length": 128},
    "task.extractor": {"task.extractor": "text"},
    "task.pattern": {"task.extractor": "regex", "task.pattern": "(\\S+)$"},
    "model.trust_remote_code": {"model.trust_remote_code": True},
}


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    root = tmp_path_factory.mktemp("sft_hash")
    data = root / "data"
    rows = [{"prompt": f"{i}+{i % 3}=", "alt": f"sum {i} {i % 3}", "answer": str(i + i % 3)} for i in range(20)]
    rows[3]["prompt"] = "3+0=é"  # a non-ASCII character, which task.ascii maps onto ASCII
    write_jsonl(data / "rows.jsonl", rows)
    write_jsonl(data / "other.jsonl", rows[:-1])
    targets = [{"prompt": f"{i}?", "answer": f"{i} Ω", "short": str(i)} for i in range(10)]
    write_jsonl(data / "targets.jsonl", targets)
    for split, chars in (("train", "ab"), ("train2", "ac"), ("test", "ä"), ("dev", "ö")):
        write_jsonl(data / "splits" / f"{split}.jsonl",
                    [{"prompt": f"{chars}{i}=", "answer": str(i)} for i in range(8)])
    for subset, chars in (("a", "hi"), ("b", "jk")):
        write_jsonl(data / "subsets" / subset / "train.jsonl",
                    [{"prompt": f"{chars}{i}=", "answer": str(i)} for i in range(8)])
    llama = tiny_llama(root / "llama", [row["prompt"] + row["answer"] for row in rows] + ["Be brief."])
    return {"data": str(data), "llama": str(llama)}


def config_of(places, *overrides: dict) -> Config:
    merged = {}
    for part in overrides:
        merged.update({k: json.loads(json.dumps(v).replace("{data}", places["data"]).replace(
            "{llama}", places["llama"])) for k, v in part.items()})
    return with_overrides(from_dict(BASE), **merged)


def digest(state: dict) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        h.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        h.update(tensor.detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()


def what_the_warm_start_does(config: Config) -> dict:
    """What the warm start of `config` trains on, and the model it ends with after a few steps: its
    weights and its config (saved beside them; the RL run reads it, e.g. max_position_embeddings)."""
    from grpo_lab.models import build_policy
    from grpo_lab.runs.task_setup import build_task_of
    from grpo_lab.runs.warm_start import train_sft

    task = build_task_of(config)
    with torch.random.fork_rng():
        torch.manual_seed(config.sft.seed)
        policy, tokenizer = build_policy(config.model, task.alphabet)
    examples = [(example.prompt, example.target) for example in task.train_examples()]
    start = digest(policy.state_dict())
    train_sft(policy, tokenizer, task, config, progress=False)
    return {"examples": examples, "vocab": sorted(tokenizer.get_vocab().items()), "start": start,
            "end": digest(policy.state_dict()), "model": policy.config.to_json_string()}


def test_every_config_key_is_audited():
    keys = set(Config().flatten())
    hashed = {key for key in keys if is_sft_key(key)}
    assert hashed == set(HASHED), "audit the new warm-start keys: add them to HASHED"
    assert set(TINY_MODEL_ONLY) <= set(WITH_MODEL_PATH)
    assert "task.rewards" not in hashed and "task.compare" not in hashed  # never read by the warm start


@pytest.mark.parametrize("key", sorted(HASHED))
def test_each_hashed_key_changes_the_warm_start(places, key):
    base_overrides, change = HASHED[key]
    base, changed = config_of(places, base_overrides), config_of(places, base_overrides, change)
    assert base.sft_hash() != changed.sft_hash()
    before, after = what_the_warm_start_does(base), what_the_warm_start_does(changed)
    assert before != after, f"{key} is hashed, but the warm start trains on the same and ends the same"


def test_no_other_key_changes_the_hash(places):
    base = config_of(places, {})
    unchanged, unvaried = [], []
    for key, value in base.flatten().items():
        if is_sft_key(key):
            continue
        change = NOT_HASHED.get(key, "auto")
        if change is None:
            continue
        if change == "auto":
            change = {key: (not value) if isinstance(value, bool) else value + 1 if isinstance(value, int)
                      else (value * 0.5 or 0.1) if isinstance(value, float) else None}
        try:
            other = config_of(places, change)
        except (ConfigError, TypeError):
            unvaried.append(key)
            continue
        assert other.flatten() != base.flatten(), key
        if other.sft_hash() != base.sft_hash():
            unchanged.append(key)
    assert not unvaried, f"give these keys a valid change in NOT_HASHED: {unvaried}"
    assert not unchanged, f"these keys change the warm start's hash but it never reads them: {unchanged}"


@pytest.mark.parametrize("key", sorted(OF_DATA_TASKS))
def test_the_verifier_of_a_data_task_leaves_the_hash(places, key):
    base, other = config_of(places, DATA), config_of(places, DATA, OF_DATA_TASKS[key])
    assert other.flatten() != base.flatten() and other.sft_hash() == base.sft_hash()


@pytest.mark.parametrize("key", sorted(WITH_MODEL_PATH))
def test_what_a_model_folder_makes_unread_leaves_the_hash(places, key):
    base = config_of(places, TARGETS, LLAMA)
    other = config_of(places, TARGETS, LLAMA, WITH_MODEL_PATH[key])
    assert other.flatten() != base.flatten()
    assert other.sft_hash() == base.sft_hash()
    assert what_the_warm_start_does(other) == what_the_warm_start_does(base)


def test_a_reward_ablation_keeps_the_warm_start_and_hashes_stay():
    tiny = from_dict(BASE)
    rewards = with_overrides(tiny, **{"task.rewards": [{"fn": "correct"}, {"fn": "format", "weight": 0.1}]})
    assert rewards.sft_hash() == tiny.sft_hash() and rewards.config_hash() != tiny.config_hash()
    # warm starts of configs without rewards, comparisons or a model folder keep their hashes
    assert Config().sft_hash() == "fb772aca58a4"
