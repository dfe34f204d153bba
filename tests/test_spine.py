"""Warm-start caching, evaluation independence, local checkpoints, evaluation metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from grpo_lab.evaluation import majority_correct, pass_at_k, summarize
from grpo_lab.runs import run


def final_weights(result):
    return torch.load(result.checkpoint, map_location="cpu", weights_only=True)["state_dict"]


def train_rows(result, key="rollout/reward_mean"):
    return [(row["step"], row[key]) for row in result.history if key in row]


def test_eval_schedule_does_not_change_training(tiny_config):
    common = {"train.steps": 4, "loss.entropy_coef": 0.01}
    a = run(tiny_config(**common, **{"train.eval_every": 1}), progress=False, log=False)
    b = run(tiny_config(**common, **{"train.eval_every": 4}), progress=False, log=False)
    assert train_rows(a) == train_rows(b) and train_rows(a, "actor/loss") == train_rows(b, "actor/loss")
    wa, wb = final_weights(a), final_weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # and the same seed reproduces the run exactly; another seed does not
    c = run(tiny_config(**common, **{"train.eval_every": 4, "seed": 1}), progress=False, log=False)
    again = run(tiny_config(**common, **{"train.eval_every": 1}), progress=False, log=False).metrics
    assert a.metrics.keys() == again.keys()
    assert np.array_equal([a.metrics[k] for k in again], list(again.values()), equal_nan=True)
    assert train_rows(c) != train_rows(a)


def test_sft_warm_start_is_cached_by_its_config(tiny_config, tmp_path):
    from grpo_lab.runs.warm_start import warm_start
    from grpo_lab.runs.train import build_task_for

    config = tiny_config()
    task = build_task_for(config)
    p1, _, path1 = warm_start(config, task, progress=False)
    stamp = (path1 / "done.json").stat().st_mtime_ns
    # a different RL seed and learning rate share the warm start; a different SFT config does not
    p2, _, path2 = warm_start(tiny_config(**{"seed": 3, "optim.lr": 1e-4}), task, progress=False)
    assert path2 == path1 and (path1 / "done.json").stat().st_mtime_ns == stamp
    assert all(torch.equal(a, b) for a, b in zip(p1.state_dict().values(), p2.state_dict().values()))
    _, _, path3 = warm_start(tiny_config(**{"sft.steps": 21}), task, progress=False)
    assert path3 != path1
    # the warm start moved the weights away from the untrained initialisation
    from grpo_lab.models import build_policy

    torch.manual_seed(config.sft.seed)
    fresh, _ = build_policy(config.model, task.alphabet)
    assert not all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), p1.state_dict().values()))


def test_runs_from_a_local_hf_checkpoint(tiny_config, tmp_path):
    from grpo_lab.models import build_policy
    from grpo_lab.runs.train import build_task_for

    config = tiny_config()
    policy, tokenizer = build_policy(config.model, build_task_for(config).alphabet)
    policy.save_pretrained(tmp_path / "local_model")
    tokenizer.save_pretrained(tmp_path / "local_model")
    result = run(tiny_config(**{"model.path": str(tmp_path / "local_model"), "sft.steps": 0, "train.steps": 1}),
                 progress=False, log=False)
    assert result.sft_path is None and "eval/accuracy" in result.metrics


def test_pass_at_k_and_majority_by_hand():
    assert pass_at_k(4, 0, 2) == 0.0 and pass_at_k(4, 4, 1) == 1.0
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - 3 / 6)  # 1 - C(3,2)/C(4,2)
    assert pass_at_k(5, 2, 3) == pytest.approx(1 - 1 / 10)  # 1 - C(3,3)/C(5,3)
    assert majority_correct(["3", "4", "3", None], "3")
    assert not majority_correct(["4", "3", "4", "3"], "3")  # a tie goes to the earliest answer
    assert not majority_correct([None, None], "3")


def test_summarize_by_hand():
    correct = np.array([[True, False, False, False], [True, True, False, True]])
    answers = [["1", "2", "2", "2"], ["5", "5", "6", "5"]]
    lengths = np.array([[3, 5, 5, 7], [2, 2, 4, 2]])
    m = summarize(correct, answers, ["1", "5"], lengths, greedy_correct=np.array([False, True]), entropy=0.5)
    assert m["eval/accuracy"] == pytest.approx(4 / 8)
    assert m["eval/pass_at_1"] == pytest.approx(4 / 8)
    assert m["eval/pass_at_4"] == pytest.approx(1.0)
    assert m["eval/pass_at_2"] == pytest.approx(((1 - 3 / 6) + (1 - 0 / 6)) / 2)
    assert m["eval/maj_at_4"] == pytest.approx(0.5) and m["eval/maj_at_2"] == pytest.approx(1.0)
    assert m["eval/len_correct"] == pytest.approx((3 + 2 + 2 + 2) / 4)
    assert m["eval/len_wrong"] == pytest.approx((5 + 5 + 7 + 4) / 4)
    assert m["eval/greedy_accuracy"] == 0.5 and m["eval/entropy"] == 0.5
