"""Golden runs: short runs of every method and the main switches on the tiny model, recorded as
fixtures (per-step metrics, a hash of every token the sampler drew, hashes of the final weights and
the config hashes), so that moving code can be checked against what the code computed before.

    python tests/golden/scenarios.py            # write tests/golden/<name>.json for every scenario
    python tests/golden/scenarios.py ppo_kl_reward   # only the named ones
    python tests/golden/scenarios.py --new-warm-start   # train tests/golden/warm_start/ again first

Every scenario starts from one stored warm start (tests/golden/warm_start/<sft hash>/, the SFT cache
entry of CONFIG), not from one trained on the machine at hand: 150 SFT steps at lr 1e-2 are chaotic
enough that another CPU's float rounding (same torch, same capability string) gives other weights
and other sampled tokens from step 0. From the stored warm start, the few RL steps of a scenario
draw the same tokens on every CPU tried (AVX512, AVX2 and the scalar kernels), with metrics within
a few 1e-6. The warm start's own training is pinned by `warm_start_record`: a short, gentle SFT
whose weights agree across those CPUs to ~1e-7.

A fixture changes only in a commit that fixes a bug, and the commit message names the bug.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import sys
from pathlib import Path

import torch

HERE = Path(__file__).parent
WARM_START = HERE / "warm_start"  # the SFT cache entry every scenario starts from
CONFIG = {  # tests/conftest.py's TINY with a warm start that gets some answers right
    "name": "golden",
    "method": "grpo",
    "seed": 0,
    "task": {"name": "chain", "digits": 1, "min_terms": 2, "max_terms": 3, "train_size": 400, "eval_size": 32},
    "model": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "max_length": 32},
    "sft": {"steps": 150, "lr": 1e-2, "batch_size": 16, "warmup_steps": 5},
    "rollout": {"prompts_per_step": 4, "group_size": 4, "max_new_tokens": 8},
    "optim": {"lr": 1e-3},
    # float32 as recorded, wherever it runs (train.precision: auto would take bf16 where the CPU has it)
    "train": {"steps": 3, "eval_every": 2, "eval_prompts": 8, "eval_samples": 4, "precision": "32-true"},
}
OFF = {"method": "offpolicy_grpo", "offpolicy.staleness": 1, "offpolicy.replay": 2, "offpolicy.eta": 2,
       "optim.epochs": 2}

SCENARIOS: dict[str, dict] = {
    "sft": {"method": "sft"},
    "rft": {"method": "rft"},
    "online_rft": {"method": "online_rft"},
    "dpo": {"method": "dpo"},
    "dpo_refresh": {"method": "dpo", "dpo.refresh_every": 2, "dpo.label_smoothing": 0.1, "train.steps": 4},
    "ppo": {"method": "ppo"},
    "ppo_kl_loss": {"method": "ppo", "loss.kl_beta": 0.05, "critic.whiten": False, "optim.minibatches": 2},
    "ppo_kl_reward": {"method": "ppo", "loss.kl_beta": 0.05, "loss.kl_placement": "reward",
                      "loss.kl_estimator": "k1", "critic.warmup": 1},
    "grpo": {},
    "grpo_process": {"advantage.estimator": "process"},
    "grpo_rloo": {"advantage.estimator": "rloo", "loss.aggregation": "seq_mean_token_sum"},
    "grpo_kl_loss": {"loss.kl_beta": 0.05, "loss.kl_estimator": "k2", "loss.entropy_coef": 0.01},
    "grpo_kl_reward": {"loss.kl_beta": 0.05, "loss.kl_placement": "reward"},
    "grpo_dynamic_sampling": {"rollout.dynamic_sampling": True, "rollout.max_sampling_rounds": 3},
    "grpo_mask_truncated": {"rollout.mask_truncated": True, "rollout.max_new_tokens": 4},
    "grpo_overlong": {"rollout.overlong_buffer": 3, "rollout.overlong_penalty": 0.5},
    "grpo_gspo": {"loss.level": "sequence", "loss.clip_low": 3e-4, "loss.clip_high": 4e-4, "optim.epochs": 2,
                  "optim.minibatches": 2},
    "grpo_dapo": {"loss.aggregation": "token_mean", "loss.clip_high": 0.28, "loss.dual_clip": 3.0,
                  "advantage.scale": "batch", "optim.epochs": 2, "optim.minibatches": 2},
    "grpo_dr": {"loss.aggregation": "seq_mean_token_sum_norm", "advantage.scale": "none"},
    "grpo_micro_batch": {"optim.micro_batch_size": 3, "loss.aggregation": "token_mean", "loss.kl_beta": 0.05},
    "ppo_micro_batch": {"method": "ppo", "optim.micro_batch_size": 5},
    "offpolicy_none": {**OFF, "offpolicy.correction": "none"},
    "offpolicy_tis": {**OFF, "offpolicy.correction": "tis", "offpolicy.sampler_noise": 0.3},
    "offpolicy_mask": {**OFF, "offpolicy.correction": "mask", "offpolicy.cap": 1.5},
    "offpolicy_sequence_tis": {**OFF, "offpolicy.correction": "sequence_tis"},
    "offpolicy_sequence_mask": {**OFF, "offpolicy.correction": "sequence_mask", "offpolicy.cap": 1.2},
    "offpolicy_decoupled": {**OFF, "offpolicy.correction": "decoupled", "offpolicy.sampler_dtype": "bfloat16"},
    "offpolicy_dynamic": {**OFF, "offpolicy.correction": "tis", "rollout.dynamic_sampling": True,
                          "offpolicy.staleness": 2, "offpolicy.eta": 3},
}


def config_dict(name: str) -> dict:
    """The scenario's whole config as a nested dict (paths left to the caller)."""
    data = copy.deepcopy(CONFIG)
    data["name"] = f"golden_{name}"
    for key, value in SCENARIOS[name].items():
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return data


def tensor_hash(named: dict) -> str:
    digest = hashlib.sha256()
    for key in sorted(named):
        t = named[key].detach().cpu().contiguous()
        digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def weight_hashes(checkpoint: Path) -> dict:
    """sha256 of the policy's and (PPO) the critic's final weights, keyed by model."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    out = {}
    for model in ("policy", "critic"):
        named = {k[len(model) + 1:]: v for k, v in state.items() if k.startswith(model + ".")}
        if named:
            out[model] = tensor_hash(named)
            out[model + "_sum"] = float(sum(v.double().sum() for v in named.values()))
    return out


class TokenRecorder:
    """Hashes every token the sampler draws (training and evaluation), in order."""

    def __init__(self):
        self.digest, self.count = hashlib.sha256(), 0

    def __enter__(self):
        from grpo_lab.rollout import sampler

        self.module, self.original = sampler, sampler._next_token

        def recording(*args, **kwargs):
            token, logp = self.original(*args, **kwargs)
            self.digest.update(token.cpu().numpy().astype("int64").tobytes())
            self.count += token.numel()
            return token, logp

        sampler._next_token = recording
        return self

    def __exit__(self, *exc):
        self.module._next_token = self.original


def stored_warm_start(sft_hash: str, sft_dir: Path) -> None:
    """Put the stored warm start into the SFT cache `sft_dir`, where the run finds it by its hash."""
    source = WARM_START / sft_hash
    if not (source / "done.json").exists():
        raise FileNotFoundError(f"no stored warm start {source}; run python tests/golden/scenarios.py --new-warm-start")
    if not (sft_dir / sft_hash / "done.json").exists():
        sft_dir.mkdir(parents=True, exist_ok=True)
        shutil.copytree(source, sft_dir / sft_hash, dirs_exist_ok=True)


def run_scenario(name: str, workdir: Path, sft_dir: Path) -> dict:
    """Run the scenario in `workdir`, from the stored warm start, and return what its fixture holds."""
    from grpo_lab.config import from_dict
    from grpo_lab.runs import run

    data = config_dict(name)
    data["sft"]["cache_dir"] = str(sft_dir)
    data.setdefault("train", {})["out_dir"] = str(workdir / "runs")
    data["train"]["threads"] = 1  # the float sums of the recording: fixed threads, not this machine's share
    config = from_dict(data)
    stored_warm_start(config.sft_hash(), sft_dir)
    torch.set_num_threads(1)
    with TokenRecorder() as tokens:
        result = run(config, progress=False, log=False)
    history = [{k: v for k, v in row.items() if not is_timing(k)} for row in result.history]
    return {
        "scenario": name,
        "config": config_dict(name),
        "config_hash": from_dict(config_dict(name)).config_hash(),  # with the default paths
        "sft_hash": config.sft_hash(),
        "tokens": {"count": tokens.count, "sha256": tokens.digest.hexdigest()},
        "weights": weight_hashes(result.checkpoint),
        "platform": platform(),
        "history": history,
    }


def is_timing(key: str) -> bool:
    """Wall-clock metrics, which no two runs share."""
    return key.startswith("perf/") or key.endswith("_s")


WARM_START_SFT = {"steps": 60, "lr": 3e-3}  # gentle enough to agree across CPUs (see the module docstring)


def warm_start_record(workdir: Path) -> dict:
    """Train CONFIG's warm start with `WARM_START_SFT` in `workdir`; what its fixture holds: the sft
    hash, and the trained weights' hash, sum, sum of squares and sum of absolute values."""
    from grpo_lab.config import from_dict
    from grpo_lab.runs.task_setup import build_task_of
    from grpo_lab.runs.warm_start import warm_start

    data = copy.deepcopy(CONFIG)
    data["sft"].update(WARM_START_SFT, cache_dir=str(workdir))
    config = from_dict(data)
    policy, _, _ = warm_start(config, build_task_of(config), progress=False)
    named = dict(policy.state_dict())
    values = [v.double() for v in named.values()]
    return {"sft": WARM_START_SFT, "sft_hash": config.sft_hash(), "weights": tensor_hash(named),
            "sum": float(sum(v.sum() for v in values)), "sum_sq": float(sum((v * v).sum() for v in values)),
            "sum_abs": float(sum(v.abs().sum() for v in values)), "platform": platform()}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown cpu"


def platform() -> str:
    """Where bit-identical weights can be expected: the torch build, the kernels' capability and the CPU."""
    return f"torch {torch.__version__} cpu {torch.backends.cpu.get_cpu_capability()} ({cpu_model()})"


def fixture_path(name: str) -> Path:
    return HERE / f"{name}.json"


def new_warm_start(tmp: Path) -> None:
    """Train CONFIG's warm start afresh into tests/golden/warm_start/<sft hash>/."""
    from grpo_lab.config import from_dict
    from grpo_lab.runs.task_setup import build_task_of
    from grpo_lab.runs.warm_start import warm_start

    data = copy.deepcopy(CONFIG)
    data["sft"]["cache_dir"] = str(tmp / "fresh_sft")
    data["train"]["threads"] = 1
    config = from_dict(data)
    _, _, path = warm_start(config, build_task_of(config), progress=False)
    shutil.rmtree(WARM_START, ignore_errors=True)
    WARM_START.mkdir()
    shutil.copytree(path, WARM_START / path.name)
    print(f"warm start: {WARM_START / path.name}")


def main(names: list[str]) -> None:
    import tempfile

    fresh = "--new-warm-start" in names
    chosen = [n for n in names if n != "--new-warm-start"]
    with tempfile.TemporaryDirectory() as tmp:
        if fresh:
            new_warm_start(Path(tmp))
        if fresh or not chosen:
            record = warm_start_record(Path(tmp) / "warm_start_record")
            (HERE / "warm_start.json").write_text(json.dumps(record, indent=1) + "\n")
        names = chosen or list(SCENARIOS)
        for name in names:
            record = run_scenario(name, Path(tmp) / name, Path(tmp) / "sft")
            fixture_path(name).write_text(json.dumps(record, indent=1) + "\n")
            print(f"{name}: {len(record['history'])} rows, {record['tokens']['count']} tokens")


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent.parent))
    main(sys.argv[1:])
