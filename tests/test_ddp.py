"""Under Lightning's ddp strategy (2 CPU processes, gloo) one GRPO step gives the gradients of one
process with the same global batch: each process samples its slice of the step's prompts with the
draws one process would make for those rows, and DDP averages the per-process gradients."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import torch

WORKER = textwrap.dedent('''
    import json, sys
    import lightning as L
    import torch
    from grpo_lab.config import from_dict
    from grpo_lab.runs import run

    class SaveGradients(L.Callback):
        def on_train_batch_end(self, trainer, module, *args):
            grads = {n: p.grad.clone() for n, p in module.policy.named_parameters() if p.grad is not None}
            torch.save({"grads": grads, "budget": dict(module.budget)}, sys.argv[2] + f".rank{trainer.global_rank}")

    torch.set_num_threads(1)
    config = from_dict(json.loads(open(sys.argv[1]).read()))
    run(config, progress=False, log=False, callbacks=[SaveGradients()])
''')


def _save_gradients(prefix):
    import lightning as L

    class SaveGradients(L.Callback):
        def on_train_batch_end(self, trainer, module, *args):
            grads = {n: p.grad.clone() for n, p in module.policy.named_parameters() if p.grad is not None}
            torch.save({"grads": grads, "budget": dict(module.budget)}, f"{prefix}.rank{trainer.global_rank}")

    return SaveGradients()


def test_two_process_ddp_step_has_the_one_process_gradients(tiny_config, tmp_path):
    # the entropy bonus gives a gradient even when every reward of the tiny warm start is equal
    overrides = {"train.steps": 1, "train.eval_prompts": 2, "train.eval_samples": 1, "train.threads": 1,
                 "sft.steps": 3, "optim.grad_clip": 0.0, "loss.kl_beta": 0.04, "loss.entropy_coef": 0.01,
                 "rollout.prompts_per_step": 4, "rollout.group_size": 3}
    one = tiny_config(**overrides)
    two = tiny_config(**overrides, **{"train.strategy": "ddp", "train.devices": 2, "train.device": "cpu"})
    assert one.config_hash() == two.config_hash()  # the world size does not change what the run is
    # one process, in this process (it also writes the shared SFT warm start)
    from grpo_lab.runs import run

    saver = _save_gradients(tmp_path / "one")
    run(one, progress=False, log=False, callbacks=[saver])
    # two processes under ddp: Lightning starts the second by running the worker script again
    script, path = tmp_path / "worker.py", tmp_path / "two.json"
    script.write_text(WORKER)
    path.write_text(json.dumps(two.to_dict()))
    proc = subprocess.run([sys.executable, str(script), str(path), str(tmp_path / "two")], capture_output=True,
                          text=True, timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = torch.load(tmp_path / "one.rank0")
    ranks = [torch.load(tmp_path / f"two.rank{r}") for r in (0, 1)]
    assert single["grads"] and set(single["grads"]) == set(ranks[0]["grads"])
    for name, grad in single["grads"].items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(ranks[0]["grads"][name], ranks[1]["grads"][name], atol=0, rtol=0)
        torch.testing.assert_close(ranks[0]["grads"][name], grad, atol=1e-6, rtol=1e-4, msg=name)
    # the budget counts the whole step on every process
    assert ranks[0]["budget"] == ranks[1]["budget"] == single["budget"]
    assert single["budget"]["samples"] == 4 * 3
