"""Real models: a tiny Llama and a byte-level BPE tokenizer with a chat template, built and saved
here (tests/tiny_models.py), run as `model.path` on a GSM8K-format file: the SFT warm start on the
reference solutions, GRPO with weighted rewards, eval and export; `sft.steps: 0` starts RL from the
given model itself; with dropout in the model, the ratio is 1 at the first update."""

from __future__ import annotations

import pytest
import torch

from grpo_lab.runs import run
from tiny_models import gsm8k_rows, tiny_llama, write_jsonl

SYSTEM = "You are a careful solver."


@pytest.fixture
def chat_setup(tmp_path, tiny_config):
    rows = gsm8k_rows(40)
    rows[5]["question"] = "Combien font 2 + 3 ? Caf\u00e9"
    data = write_jsonl(tmp_path / "gsm8k.jsonl", rows)
    texts = [r["question"] + "\n" + r["answer"] + "\nThe answer is" for r in rows] + [SYSTEM]

    def make(dropout: float = 0.0, **overrides):
        folder = tiny_llama(tmp_path / f"llama_{dropout}", texts, dropout=dropout)
        config = tiny_config(**{
            "task": {"name": "gsm8k", "path": str(data), "eval_size": 6, "chat": True, "system_prompt": SYSTEM,
                     "rewards": [{"fn": "correct", "weight": 1.0}, {"fn": "format", "weight": 0.2, "pattern": "answer is"}]},
            "model": {"path": str(folder)},
            "sft": {"steps": 40, "lr": 1e-2, "batch_size": 8, "warmup_steps": 2},
            "rollout": {"prompts_per_step": 2, "group_size": 4, "max_new_tokens": 24},
            "train": {"steps": 2, "eval_prompts": 6, "eval_samples": 2, "eval_every": 2, "precision": "32-true"},
        }, **overrides)
        return config, folder

    return make


def reference_nll(policy, tokenizer, examples) -> float:
    from grpo_lab.rollout import token_logprobs
    from grpo_lab.runs.warm_start import sft_batch

    batch = sft_batch(tokenizer, examples)
    with torch.no_grad():
        logp, _ = token_logprobs(policy.eval(), batch["input_ids"], batch["attention_mask"],
                                 batch["completion_mask"].shape[1])
    return float(-(logp * batch["completion_mask"]).sum() / batch["completion_mask"].sum())


def test_a_chat_model_warm_starts_trains_evaluates_and_exports(chat_setup, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from grpo_lab.engine import Engine
    from grpo_lab.models import load_pretrained
    from grpo_lab.rollout.encode import decode_completions
    from grpo_lab.runs.evaluate import evaluate_source
    from grpo_lab.runs.export import export
    from grpo_lab.runs.sources import load_source
    from grpo_lab.runs.task_setup import build_task_of

    config, folder = chat_setup()
    task = build_task_of(config)
    examples = [*task.train_examples(), *task.eval_examples()]
    head = f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\nQuestion: "
    assert all(e.prompt.startswith(head) and e.prompt.endswith("\nAnswer:<|im_end|>\n<|im_start|>assistant\n")
               for e in examples)
    assert any("Combien font 2 + 3 ? Caf\u00e9" in e.prompt for e in examples)  # Unicode kept for a real tokenizer

    result = run(config, progress=False)
    # the warm start learnt the reference solutions: their NLL fell from the given model's
    raw, tokenizer = load_pretrained(folder)
    warm, _ = load_pretrained(result.sft_path)
    train = list(task.train_examples())[:16]
    assert reference_nll(warm, tokenizer, train) < 0.7 * reference_nll(raw, tokenizer, train)
    rows = [r for r in result.history if "reward/format" in r]
    assert len(rows) == 2 and all("reward/correct" in r for r in rows)

    out = export(str(result.checkpoint), tmp_path / "export").folder
    model, hf_tokenizer = AutoModelForCausalLM.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    assert type(model).__name__ == "LlamaForCausalLM" and hf_tokenizer.chat_template
    source = load_source(str(result.checkpoint))
    eval_examples = list(task.eval_examples())
    rollout = Engine(config, source.policy, source.tokenizer, task).generate(eval_examples, group_size=1, greedy=True)
    ours = decode_completions(source.tokenizer, rollout.completion_ids, rollout.completion_mask)
    for example, text, finished in zip(eval_examples, ours, rollout.finished.tolist()):
        ids = hf_tokenizer(example.prompt, add_special_tokens=False, return_tensors="pt")
        new = model.generate(**ids, max_new_tokens=24, do_sample=False, eos_token_id=hf_tokenizer.eos_token_id,
                             pad_token_id=hf_tokenizer.pad_token_id)[0, ids["input_ids"].shape[1]:].tolist()
        assert (hf_tokenizer.eos_token_id in new) == finished
        assert hf_tokenizer.decode(new[: new.index(hf_tokenizer.eos_token_id)] if finished else new) == text
    report = evaluate_source(load_source(str(out)), log=False)
    for key in ("eval/greedy_accuracy", "eval/accuracy", "eval/pass_at_2", "eval/maj_at_2"):
        assert report.metrics[key] == result.metrics[key], key


def test_sft_steps_zero_starts_rl_from_the_given_model(chat_setup):
    from grpo_lab.runs.evaluate import evaluate_source
    from grpo_lab.runs.sources import load_source

    config, folder = chat_setup(**{"sft.steps": 0})
    result = run(config, progress=False)
    assert result.sft_path is None
    run_config = result.checkpoint.parent / "config.yaml"
    # the evaluation before the first RL step is the given model's own
    report = evaluate_source(load_source(str(folder), config_file=run_config), log=False)
    for key in ("eval/greedy_accuracy", "eval/accuracy", "eval/pass_at_2"):
        assert report.metrics[key] == result.initial[key], key
    assert report.metrics["eval/accuracy"] >= 0 and result.initial["eval/entropy"] > 0


def test_with_dropout_the_ratio_is_one_at_the_first_update(chat_setup):
    from grpo_lab.models import load_pretrained
    from grpo_lab.rollout import token_logprobs
    from grpo_lab.runs.task_setup import build_task_of
    from grpo_lab.runs.warm_start import sft_batch

    config, folder = chat_setup(dropout=0.5, **{"sft.steps": 0, "train.steps": 1, "optim.epochs": 1,
                                                "optim.minibatches": 1})
    policy, tokenizer = load_pretrained(folder)
    batch = sft_batch(tokenizer, list(build_task_of(config).train_examples())[:4])
    torch.manual_seed(0)
    in_training_mode = [token_logprobs(policy.train(), batch["input_ids"], batch["attention_mask"],
                                       batch["completion_mask"].shape[1])[0] for _ in range(2)]
    assert not torch.allclose(*in_training_mode)  # the model's dropout is live in training mode

    result = run(config, progress=False, log=False)
    (step,) = [r for r in result.history if "actor/ratio_max" in r]
    assert step["actor/ratio_max"] == pytest.approx(1.0, abs=1e-4)
    assert step["actor/ratio_min"] == pytest.approx(1.0, abs=1e-4)
    assert step["actor/clip_frac_low"] == 0.0 and step["actor/clip_frac_high"] == 0.0
