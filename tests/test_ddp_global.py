"""Every statistic of a step is the whole step's: a step split over 2 processes (Lightning's ddp,
gloo on CPU) gives the gradients, kept groups and budget of one process running the whole step,
for token_mean and Dr. GRPO's constant normaliser (loss normalisers), dynamic sampling (the groups
kept, the rounds and the budget), advantage.scale: batch (the batch's std) and PPO's whitening."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

SCENARIOS = {
    "token_mean": {"loss.aggregation": "token_mean", "loss.entropy_coef": 0.01, "loss.kl_beta": 0.04},
    "sum_norm": {"loss.aggregation": "seq_mean_token_sum_norm", "optim.micro_batch_size": 2},
    "batch_scale": {"advantage.scale": "batch"},
    "dynamic": {"rollout.dynamic_sampling": True, "rollout.max_sampling_rounds": 4, "rare": True},
    "ppo_whiten": {"method": "ppo", "critic.whiten": True},
}
COMMON = {"train.steps": 1, "train.eval_prompts": 2, "train.eval_samples": 1, "train.threads": 1, "sft.steps": 3,
          "optim.grad_clip": 0.0, "rollout.prompts_per_step": 4, "rollout.group_size": 3}

WORKER = textwrap.dedent('''
    import json, sys
    import lightning as L
    import torch
    from grpo_lab.config import from_dict
    from grpo_lab.runs import run
    import grpo_lab.runs.train as train

    def save(prefix):
        class Save(L.Callback):
            def on_train_batch_end(self, trainer, module, *args):
                grads = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
                row = next(r for r in reversed(module.history) if "budget/samples" in r)
                torch.save({"grads": grads, "budget": dict(module.budget), "row": row},
                           f"{prefix}.rank{trainer.global_rank}")
        return Save()

    class Scored:  # the task with a dense reward (digits in the completion) or a rare one
        def __init__(self, task, rare):
            self.inner, self.rare = task, rare
        def __getattr__(self, name):
            return getattr(self.inner, name)
        def reward(self, example, completion, finished):
            if self.rare:
                return float(completion[:1] in "12")
            return sum(c.isdigit() for c in completion) / max(len(completion), 1)

    torch.set_num_threads(1)
    scenarios = json.loads(open(sys.argv[1]).read())
    build = train.build_task_for
    for name, (data, rare) in scenarios.items():
        train.build_task_for = lambda config, rare=rare: Scored(build(config), rare)
        run(from_dict(data), progress=False, log=False, callbacks=[save(sys.argv[2] + "/" + name)])
''')


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Each scenario run by one process here and by two under ddp; {name: (single, [rank0, rank1])}."""
    from conftest import TINY
    from grpo_lab.config import from_dict, merge

    tmp = tmp_path_factory.mktemp("ddp_global")
    configs = {}
    for name, overrides in SCENARIOS.items():
        overrides = dict(overrides)
        rare = overrides.pop("rare", False)
        data = merge(json.loads(json.dumps(TINY)), {"sft": {"cache_dir": str(tmp / "sft")},
                                                    "train": {"out_dir": str(tmp / "runs")}})
        for key, value in {**COMMON, **overrides}.items():
            section, leaf = key.split(".") if "." in key else (None, key)
            (data.setdefault(section, {}) if section else data)[leaf] = value
        one = from_dict(data)
        two = from_dict(merge(data, {"train": {"strategy": "ddp", "devices": 2, "device": "cpu"}}))
        assert one.config_hash() == two.config_hash()
        configs[name] = (one.to_dict(), two.to_dict(), rare)
    script = tmp / "worker.py"
    script.write_text(WORKER)
    (tmp / "single").mkdir()
    (tmp / "double").mkdir()
    for which, index in (("single", 0), ("double", 1)):
        spec = {name: (c[index], c[2]) for name, c in configs.items()}
        (tmp / f"{which}.json").write_text(json.dumps(spec))
        proc = subprocess.run([sys.executable, str(script), str(tmp / f"{which}.json"), str(tmp / which)],
                              capture_output=True, text=True, timeout=600, cwd=tmp)
        assert proc.returncode == 0, proc.stderr[-3000:]
    out = {}
    for name in SCENARIOS:
        single = torch.load(tmp / "single" / f"{name}.rank0")
        double = [torch.load(tmp / "double" / f"{name}.rank{r}") for r in (0, 1)]
        out[name] = (single, double)
    return out


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_two_processes_compute_the_step_of_one(results, name):
    single, (rank0, rank1) = results[name]
    assert single["grads"] and set(single["grads"]) == set(rank0["grads"])
    moved = 0
    for key, grad in single["grads"].items():
        torch.testing.assert_close(rank0["grads"][key], rank1["grads"][key], atol=0, rtol=0)
        torch.testing.assert_close(rank0["grads"][key], grad, atol=1e-6, rtol=1e-4, msg=key)
        moved += int(grad.abs().sum() > 0)
    assert moved, "no gradient to compare"
    assert rank0["budget"] == rank1["budget"] == single["budget"]  # the whole step's, on every process
    if name == "dynamic":  # the same rounds, the same groups dropped, the same rows drawn
        for key in ("rollout/sampling_rounds", "rollout/dropped_groups", "rollout/prompts_drawn",
                    "rollout/reward_mean", "rollout/zero_std_frac"):
            assert rank0["row"][key] == rank1["row"][key] == pytest.approx(single["row"][key]), key
        assert single["row"]["rollout/sampling_rounds"] > 1 and single["row"]["rollout/dropped_groups"] > 0
