"""Issue "numbers you can trust", the engine's side: each loss takes the gradient its docs claim.

- supervised and preference objectives (SFT, RFT, online RFT, DPO) train the model's own
  log-probs (T = 1, no top-p), whatever temperature and top-p the sampler draws with;
- online RFT's step is Eq. 10's, normalised by every sampled row, not by the correct ones alone;
- the metrics of several minibatches merge by their reductions (the max of maxima);
- a bf16 sampler on the generic model path gets its pi_old recomputed by the learner.
"""

from __future__ import annotations

import copy

import pytest
import torch

from grpo_lab.core.preference import dpo_pair_loss
from grpo_lab.core.supervised import supervised_loss
from grpo_lab.engine import module_class
from golden.scenarios import WARM_START
from grpo_lab.models import load_pretrained
from grpo_lab.rollout import token_logprobs
from grpo_lab.runs.train import build_task_for


def make_module(config, ref=False):
    """The config's module around the golden runs' stored warm start (it gets some answers right)."""
    task = build_task_for(config)
    torch.manual_seed(0)
    (stored,) = WARM_START.iterdir()
    policy, tokenizer = load_pretrained(stored)
    reference = copy.deepcopy(policy) if ref else None
    if reference is not None:
        with torch.no_grad():
            for p in reference.parameters():
                p.add_(0.05 * torch.randn_like(p))
    return module_class(config.method)(config, policy, tokenizer, task, ref_policy=reference)


def own_logprobs(model, rollout):
    return token_logprobs(model, rollout.input_ids, rollout.attention_mask, rollout.completion_ids.shape[1])[0]


@pytest.mark.parametrize("method", ["sft", "online_rft"])
def test_supervised_objectives_train_the_models_own_logprobs_not_the_samplers(tiny_config, method):
    config = tiny_config(method=method, **{"rollout.temperature": 0.6, "rollout.top_p": 0.8,
                                           "loss.aggregation": "token_mean"})
    module = make_module(config)
    data = module.source.collect(module.step_of(0))
    batch = module.prepare(module.step_of(0), data.batch, {}) if data.batch is not None else None
    if batch is None:
        pytest.skip("no correct sample to train on")
    objective = module.objectives[0]
    rows = torch.arange(batch.rows)
    loss, _ = objective.loss(module.step_of(0), batch, rows)
    untempered = supervised_loss(own_logprobs(module.policy, batch.rollout), batch.rollout.completion_mask,
                                 aggregation="token_mean")
    assert loss.item() == pytest.approx(untempered.item() * getattr(batch, "loss_scale", 1.0), rel=1e-5)
    tempered = supervised_loss(module.logprobs(batch.rollout)[0], batch.rollout.completion_mask,
                               aggregation="token_mean")
    assert abs(tempered.item() - untempered.item()) > 1e-3  # the two differ: the test can tell them apart


def test_dpo_trains_the_models_own_logprobs_against_the_references_own(tiny_config):
    config = tiny_config(method="dpo", **{"rollout.temperature": 0.6, "rollout.top_p": 0.8, "dpo.beta": 0.5})
    module = make_module(config, ref=True)
    data = module.source.collect(module.step_of(0))
    if data.batch is None:
        pytest.skip("the untrained policy gave no (correct, wrong) pair")
    batch = module.prepare(module.step_of(0), data.batch, {})
    pairs = torch.arange(batch.pairs)
    loss, _ = module.objectives[0].loss(module.step_of(0), batch, pairs)
    rollout = batch.rollout
    with torch.no_grad():
        ref = own_logprobs(module.ref_policy, rollout)
    expected, _ = dpo_pair_loss(own_logprobs(module.policy, rollout), ref, rollout.completion_mask, beta=0.5)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("aggregation", ["seq_mean_token_mean", "token_mean"])
def test_online_rft_normalises_by_every_sampled_row_as_eq_10(tiny_config, aggregation):
    """Eq. 10: (1/B) sum_i I(o_i) (1/|o_i|) sum_t log pi; the wrong rows count with coefficient 0."""
    config = tiny_config(method="online_rft", **{"loss.aggregation": aggregation})
    module = make_module(config)
    data = module.source.collect(module.step_of(0))
    whole = data.batch
    batch = module.prepare(module.step_of(0), whole, {})
    correct = whole.correct
    assert 0 < int(correct.sum()) < whole.rows  # some rows kept, some not: the normaliser matters
    loss, _ = module.objectives[0].loss(module.step_of(0), batch, torch.arange(batch.rows))
    with torch.no_grad():
        logp = own_logprobs(module.policy, whole.rollout)
    mask = whole.rollout.completion_mask * correct[:, None]
    if aggregation == "token_mean":
        expected = -(logp * mask).sum() / whole.rollout.completion_mask.sum()
    else:
        expected = -((logp * mask).sum(-1) / whole.rollout.completion_mask.sum(-1)).sum() / whole.rows
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    kept = tiny_config(method="online_rft", **{"loss.aggregation": aggregation, "loss.rft_normalise": "kept"})
    assert kept.config_hash() != config.config_hash()
    module = make_module(kept)
    batch = module.prepare(module.step_of(0), module.source.collect(module.step_of(0)).batch, {})
    loss_kept, _ = module.objectives[0].loss(module.step_of(0), batch, torch.arange(batch.rows))
    if aggregation == "token_mean":  # the mean over the correct rows alone: 1/accuracy times Eq. 10's
        expected = -(logp * mask).sum() / mask.sum()
    else:
        expected = -((logp * mask).sum(-1) / whole.rollout.completion_mask.sum(-1)).sum() / correct.sum()
    assert batch.loss_scale == 1.0 and loss_kept.item() == pytest.approx(expected.item(), rel=1e-5)


def test_the_minibatches_metrics_merge_by_their_reductions():
    """actor/ratio_max of a step is the largest ratio of any of its minibatches, not a mean of maxima."""
    from grpo_lab.engine.updates import combine

    parts = [{"actor/ratio_max": 1.0, "actor/ratio_min": 1.0, "actor/loss": 0.2},
             {"actor/ratio_max": 1.3, "actor/ratio_min": 0.6, "actor/loss": 0.4, "actor/grad_norm": 2.0}]
    merged = combine(parts, {"actor/ratio_max": "max", "actor/ratio_min": "min", "actor/loss": "loss"})
    assert merged == pytest.approx({"actor/ratio_max": 1.3, "actor/ratio_min": 0.6, "actor/loss": 0.3,
                                    "actor/grad_norm": 2.0})


@pytest.mark.parametrize("settings, says", [
    ({"loss.level": "sequence"}, "GSPO"),
    ({"loss.objective": "cispo"}, "CISPO"),
])
def test_a_recipe_run_away_from_its_papers_settings_warns_in_one_line(tiny_config, settings, says):
    with pytest.warns(UserWarning, match=says) as caught:
        tiny_config(**settings)
    assert all("\n" not in str(w.message) for w in caught)


def test_the_papers_settings_run_without_a_warning(tiny_config, recwarn):
    tiny_config(**{"loss.level": "sequence", "loss.clip_low": 3e-4, "loss.clip_high": 4e-4})
    tiny_config(**{"loss.objective": "cispo", "loss.aggregation": "token_mean"})
    assert not [w for w in recwarn if "GSPO" in str(w.message) or "CISPO" in str(w.message)]


def test_a_bf16_sampler_on_the_generic_path_gets_its_pi_old_recomputed(tmp_path, tiny_config):
    """A tiny Llama takes the generic Hugging Face path, whose cached bf16 decoding rounds otherwise than
    the learner's full forward: the sampler's log-probs cannot stand in for pi_old there."""
    from tiny_models import gsm8k_rows, tiny_llama, write_jsonl

    rows = gsm8k_rows(12)
    data = write_jsonl(tmp_path / "gsm8k.jsonl", rows)
    folder = tiny_llama(tmp_path / "llama", [r["question"] + "\n" + r["answer"] for r in rows])
    config = tiny_config(**{"task": {"name": "gsm8k", "path": str(data), "eval_size": 4}, "model": {"path": str(folder)},
                            "sft": {"steps": 0}, "rollout": {"prompts_per_step": 2, "group_size": 4,
                                                             "max_new_tokens": 24, "temperature": 0.7, "top_p": 0.9},
                            "train": {"precision": "bf16-mixed"}})
    from grpo_lab.models import load_pretrained

    policy, tokenizer = load_pretrained(folder)
    module = module_class("grpo")(config, policy, tokenizer, build_task_for(config))
    assert not module.sampler_matches_learner
    metrics = {}
    batch = module.prepare(module.step_of(0), module.source.collect(module.step_of(0)).batch, metrics)
    with torch.no_grad():
        learner = module.logprobs(batch.rollout)[0]
    assert torch.equal(batch.old_logp, learner)  # the ratio is exactly 1 at the first update
    assert batch.weights is None and "offpolicy/kl_behaviour" in metrics
    mask = batch.rollout.completion_mask > 0
    assert (batch.rollout.logprobs - learner)[mask].abs().max() > 0  # there was something to recompute
    lean = make_module(tiny_config(**{"train.precision": "bf16-mixed"}))
    assert lean.sampler_matches_learner  # the lean Qwen2 path: its sampler's log-probs are the learner's
