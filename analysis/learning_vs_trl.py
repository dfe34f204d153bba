"""Time to accuracy: grpo-lab against TRL's GRPOTrainer, from the same SFT checkpoint.

Both sides start from grpo-lab's cached warm start of the config (default
experiments/grpo_chain.yaml), a Hugging Face folder that TRL loads as its `model`. They train on
the same chain-task prompts, step for step (TRL gets grpo-lab's prompt order of each seed and
`shuffle_dataset=False`), with the same reward (the task's verifier: the right answer and an EOS
token, which TRL's side reads from `completion_ids`, never from the decoded text) and matched
hyperparameters: P prompts x G completions, one optimizer update per RL step (mu = 1,
`num_iterations=1`), constant learning rate without warm-up, beta 0 (no reference model), fused
AdamW with grpo-lab's betas, eps and weight decay, gradient clipping, temperature and top-p 1 (TRL:
top_k 0), the same cap on completion tokens, the per-sequence token mean of the loss averaged over
sequences (grpo-lab `seq_mean_token_mean`, TRL `loss_type="grpo"`), advantages scaled by the
group's std with TRL's 1e-4 added to it (grpo-lab `advantage.eps` is set to match). TRL runs with
gradient checkpointing off (its default recomputes the forward in the backward).

Held-out accuracy is measured by one evaluator for both: grpo-lab's sampled evaluation
(`grpo_lab.engine.evaluate`, `train.eval_prompts` held-out prompts x `train.eval_samples` samples at
`train.eval_temperature`, from the evaluation stream of the run's seed) on a float32 copy of the
policy's weights, with autocast off, before the first step and every `--eval-every` steps.

The clock is RL wall time: it starts when training starts (the model loaded, the trainer built:
Lightning's `on_train_start`, TRL's `on_train_begin`), stands still during each evaluation, and is
read at the end of every step. It counts everything a step does on either side (sampling, reward,
advantages, forwards, backward, optimizer, the trainers' own loops and logging) and nothing else.

Each side runs at its best precision on this machine: with `--grpo-lab-precision auto` and
`--trl-precision auto` (the defaults) a short
measurement of float32 against bf16 autocast (float32 weights; grpo-lab `train.precision:
bf16-mixed`, TRL `bf16=True`) picks the one with fewer seconds per step, side by side. The seeds run
alternately, one process at a time (grpo-lab seed 0, TRL seed 0, grpo-lab seed 1, ...), each side
at `--threads` torch threads. grpo-lab's runs go on past TRL's last step (`--grpo-lab-steps`, default
twice the steps), so that its time to TRL's final accuracy is measured even where it needs more
steps than TRL took; its prompts beyond TRL's last step are the ones its own stream gives.

Output in --out (default results/learning_vs_trl): curves.jsonl (one line per evaluation: side,
seed, step, rl_wall_s, accuracy, ...), runs.jsonl (one line per run: phases, step times, versions),
precision.jsonl (the precision measurement), accuracy_vs_time.png, and README.md with the curves
table, TRL's final accuracy (mean over seeds, t interval), the RL wall time each side takes to first
reach it (on the mean curve and per seed), their ratio, and where the time goes.

TRL is not a dependency of grpo-lab. Install it beside grpo-lab in a separate environment; the
grpo-lab side runs with this interpreter, the TRL side with --trl-python:
    python3 -m venv /tmp/trlvenv && /tmp/trlvenv/bin/pip install torch==2.13.0 trl==1.16.0 -e .
    python analysis/learning_vs_trl.py --quick                # the whole path in a few minutes
    python analysis/learning_vs_trl.py --seeds 5 --pick-rounds 2   # results/learning_vs_trl/: TRL 200 steps,
                                                                   # grpo-lab's curve on to 400
    python analysis/learning_vs_trl.py --report-only          # README and plot from the saved lines
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIDES = ("grpo_lab", "trl")
PRECISIONS = ("fp32", "bf16-mixed")
LIGHTNING_PRECISION = {"fp32": "32-true", "bf16-mixed": "bf16-mixed"}
TRL_STD_EPS = 1e-4  # TRL divides the centred rewards by (group std + 1e-4)
QUICK = {"seeds": 1, "steps": 10, "eval_every": 5, "eval_prompts": 64, "eval_samples": 4, "pick_steps": 4}


# ----- the clock and the evaluator (both sides) --------------------------------------------------
class RLClock:
    """Wall and CPU seconds of RL work: runs from `start`, stands still between `pause` and `resume`."""

    def __init__(self):
        self.wall = self.cpu = 0.0
        self.since = None

    def start(self) -> None:
        self.since = (time.perf_counter(), time.process_time())

    def pause(self) -> None:
        if self.since is not None:
            self.wall += time.perf_counter() - self.since[0]
            self.cpu += time.process_time() - self.since[1]
            self.since = None

    resume = start

    def read(self) -> tuple[float, float]:
        if self.since is None:
            return self.wall, self.cpu
        return self.wall + time.perf_counter() - self.since[0], self.cpu + time.process_time() - self.since[1]


class HeldOut:
    """grpo-lab's sampled evaluation of a policy's weights, copied into a float32 policy of its own."""

    def __init__(self, config, sft_path: Path):
        from grpo_lab.engine import Engine
        from grpo_lab.models import load_pretrained
        from grpo_lab.config.loading import with_overrides
        from grpo_lab.runs.train import build_task_for

        config = with_overrides(config, **{"train.precision": "32-true"})  # the evaluator's passes in float32
        policy, tokenizer = load_pretrained(sft_path, dtype="float32")
        self.task = build_task_for(config)
        self.engine = Engine(config, policy, tokenizer, self.task)
        self.examples = list(self.task.eval_examples())[: config.train.eval_prompts]
        self.samples = config.train.eval_samples

    def __call__(self, state: dict) -> dict:
        import torch

        from grpo_lab.engine.evaluate import evaluate

        self.engine.policy.load_state_dict({k: v.float() for k, v in state.items()})
        with torch.no_grad():
            return evaluate(self.engine, self.examples, samples=self.samples)


class Recorder:
    """The clock, and one curve row per evaluation (the clock paused while it runs)."""

    def __init__(self, side: str, seed: int, heldout):
        self.side, self.seed, self.heldout = side, seed, heldout
        self.clock = RLClock()
        self.rows: list[dict] = []
        self.step_ends: list[float] = []  # RL wall seconds at the end of each step

    def step_end(self) -> None:
        self.step_ends.append(self.clock.read()[0])

    def evaluate(self, step: int, state_of) -> dict:
        self.clock.pause()
        if self.heldout is None:
            self.clock.resume()
            return {}
        start = time.perf_counter()
        metrics = self.heldout(state_of())
        wall, cpu = self.clock.read()
        self.rows.append({"side": self.side, "seed": self.seed, "step": step, "rl_wall_s": wall, "rl_cpu_s": cpu,
                          "accuracy": metrics["eval/accuracy"], "greedy_accuracy": metrics["eval/greedy_accuracy"],
                          "eval_s": time.perf_counter() - start})
        print(f"{self.side} seed {self.seed} step {step}: accuracy {metrics['eval/accuracy']:.4f} "
              f"at {wall:.1f} s", file=sys.stderr, flush=True)
        self.clock.resume()
        return metrics


def versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("torch", "transformers", "accelerate", "lightning", "trl"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def sft_folder(config) -> Path:
    return Path(config.sft.resolved_cache_dir) / config.sft_hash()


def eval_due(step: int, every: int, steps: int) -> bool:
    return step % every == 0 or step == steps


# ----- the grpo-lab side -------------------------------------------------------------------------
def grpo_lab_worker(config, *, seed: int, precision: str, threads: int, evaluate: bool) -> dict:
    import lightning as L
    import torch

    from grpo_lab.config.loading import with_overrides
    from grpo_lab.runs.train import quiet, run

    quiet()
    torch.set_num_threads(threads)
    config = with_overrides(config, **{"seed": seed, "train.precision": LIGHTNING_PRECISION[precision],
                                       "train.threads": threads})
    recorder = Recorder("grpo_lab", seed, HeldOut(config, sft_folder(config)) if evaluate else None)
    steps = config.train.steps

    class Clock(L.Callback):
        def on_train_start(self, trainer, module):
            def timed_evaluate(*args, **kwargs):  # the engine evaluates before step 0, every eval_every and at the end
                step = module.step_count
                if not eval_due(step, config.train.eval_every, steps):
                    return {}
                metrics = recorder.evaluate(step, module.policy.state_dict)
                module.last_eval = metrics
                return metrics

            module.evaluate = timed_evaluate
            recorder.clock.start()

        def on_train_batch_end(self, *args, **kwargs):
            recorder.step_end()

    result = run(config, log=False, progress=False, callbacks=[Clock()])
    rows = [r for r in result.history if "perf/step_s" in r]
    phases = {name: sum(r.get(f"perf/{name}", 0.0) for r in rows) for name in ("gen_s", "logprob_s", "update_s",
                                                                             "step_s")}
    total = recorder.step_ends[-1]
    phases["loop_s"] = total - phases["step_s"]  # Lightning's loop and logging between the timed steps
    reward = [r["rollout/reward_mean"] for r in rows if "rollout/reward_mean" in r]
    return {"side": "grpo_lab", "seed": seed, "precision": precision, "threads": threads, "steps": len(rows),
            "rl_wall_s": total, "rl_cpu_s": recorder.clock.read()[1], "step_ends": recorder.step_ends,
            "phases": phases, "reward_mean": reward, "curve": recorder.rows, "versions": versions()}


# ----- the TRL side ------------------------------------------------------------------------------
class PhaseTimer:
    """Wraps methods of one object to add up the wall seconds spent in each."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def wrap(self, obj, method: str, name: str) -> None:
        inner = getattr(obj, method)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

        setattr(obj, method, timed)


def trl_worker(config, *, seed: int, precision: str, threads: int, evaluate: bool) -> dict:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from grpo_lab.config.loading import with_overrides
    from grpo_lab.runs.train import quiet

    quiet()
    torch.set_num_threads(threads)
    config = with_overrides(config, **{"seed": seed, "train.threads": threads})
    folder = sft_folder(config)
    heldout = HeldOut(config, folder)  # also the source of the prompt order and the tokenizer
    recorder = Recorder("trl", seed, heldout if evaluate else None)
    task, tokenizer, engine = heldout.task, heldout.engine.tokenizer, heldout.engine
    steps, rollout, optim = config.train.steps, config.rollout, config.optim
    order = [ex for step in range(steps) for ex in engine.prompts_for_step(step)]
    for ex in order[:64]:  # TRL tokenizes prompts with the tokenizer's defaults: the same ids as grpo-lab's
        if tokenizer(text=[ex.prompt])["input_ids"][0] != tokenizer([ex.prompt], add_special_tokens=False)["input_ids"][0]:
            raise SystemExit(f"TRL would tokenize the prompt {ex.prompt!r} differently from grpo-lab")
    dataset = Dataset.from_dict({"prompt": [ex.prompt for ex in order], "row": list(range(len(order)))})
    eos = tokenizer.eos_token_id

    def chain_reward(completions, completion_ids, row, **kwargs):
        """The task's verifier; finished means EOS among the completion's token ids."""
        out = []
        for ids, index in zip(completion_ids, row):
            finished = eos in ids
            text = tokenizer.decode(ids[: ids.index(eos)] if finished else ids, skip_special_tokens=False)
            out.append(float(task.reward(order[index], text, finished)))
        return out

    trainer = None

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            recorder.evaluate(0, trainer.model.state_dict)
            recorder.clock.start()

        def on_step_end(self, args, state, control, **kwargs):
            recorder.step_end()
            step = state.global_step
            if step < steps and step % config.train.eval_every == 0 or step == steps:
                recorder.evaluate(step, trainer.model.state_dict)

    output_dir = tempfile.mkdtemp(prefix="trl_learning_")
    args = GRPOConfig(
        output_dir=output_dir, per_device_train_batch_size=rollout.prompts_per_step * rollout.group_size,
        gradient_accumulation_steps=1, num_generations=rollout.group_size,
        max_completion_length=rollout.max_new_tokens, temperature=rollout.temperature, top_p=rollout.top_p, top_k=0,
        beta=config.loss.kl_beta, num_iterations=optim.epochs, epsilon=config.loss.clip_low, loss_type="grpo",
        scale_rewards="group", learning_rate=optim.lr, lr_scheduler_type="constant", warmup_steps=0,
        optim="adamw_torch_fused", adam_beta1=optim.beta1, adam_beta2=optim.beta2, adam_epsilon=1e-8,
        weight_decay=optim.weight_decay, max_grad_norm=optim.grad_clip, max_steps=steps, shuffle_dataset=False,
        seed=seed, data_seed=seed, use_cpu=True, bf16=precision == "bf16-mixed", fp16=False,
        gradient_checkpointing=False, report_to="none", save_strategy="no", logging_steps=10,
        dataloader_num_workers=0, disable_tqdm=True,
    )
    trainer = GRPOTrainer(model=str(folder), reward_funcs=chain_reward, args=args, train_dataset=dataset,
                          processing_class=tokenizer, callbacks=[Clock()])
    timer = PhaseTimer()
    for method, name in (("_prepare_inputs", "prepare_s"), ("_generate_single_turn", "gen_s"),
                         ("_calculate_rewards", "reward_s"), ("compute_loss", "loss_forward_s")):
        timer.wrap(trainer, method, name)
    trainer.train()
    total = recorder.step_ends[-1]
    phases = dict(timer.seconds)
    phases["backward_optim_loop_s"] = total - phases.get("prepare_s", 0.0) - phases.get("loss_forward_s", 0.0)
    reward = [r["reward"] for r in trainer.state.log_history if "reward" in r]
    return {"side": "trl", "seed": seed, "precision": precision, "threads": threads, "steps": trainer.state.global_step,
            "rl_wall_s": total, "rl_cpu_s": recorder.clock.read()[1], "step_ends": recorder.step_ends,
            "phases": phases, "reward_mean_every_10": reward, "curve": recorder.rows, "versions": versions()}


def warm_worker(config) -> dict:
    """Builds (or finds) the cached warm start; its folder."""
    from grpo_lab.runs.train import build_task_for, quiet
    from grpo_lab.runs.warm_start import warm_start

    quiet()
    start = time.perf_counter()
    _, _, path = warm_start(config, build_task_for(config), progress=False, device="cpu")
    return {"sft_path": str(path), "seconds": time.perf_counter() - start}


# ----- the driver --------------------------------------------------------------------------------
def run_worker(python: str, kind: str, args, *, seed: int = 0, precision: str = "fp32", steps: int = 0,
               evaluate: bool = True) -> dict:
    """One worker process; its result record."""
    out = Path(args.out)
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        result = Path(f.name)
    cmd = [python, str(Path(__file__).resolve()), "--worker", kind, "--config-file", str(out / "config.yaml"),
           "--seed", str(seed), "--precision", precision, "--threads", str(args.threads), "--result", str(result)]
    if steps:
        cmd += ["--worker-steps", str(steps)]
    if not evaluate:
        cmd.append("--no-eval")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
               OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads), TOKENIZERS_PARALLELISM="false")
    log = out / "logs" / f"{kind}_seed{seed}_{precision}{'_pick' if not evaluate else ''}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as stream:
        proc = subprocess.run(cmd, env=env, cwd=ROOT, stdout=stream, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = log.read_text()[-3000:]
        raise SystemExit(f"the {kind} worker (seed {seed}, {precision}) failed with code {proc.returncode}; "
                         f"{log}:\n{tail}")
    record = json.loads(result.read_text())
    result.unlink()
    return record


def seconds_per_step(record: dict) -> float:
    """Mean seconds per step after the first (which pays for warm-up)."""
    ends = record["step_ends"]
    return (ends[-1] - ends[0]) / max(len(ends) - 1, 1)


def pick_precision(args, python: dict) -> dict:
    """Seconds per step of each side in float32 and in bf16 autocast, alternating; the faster of each side."""
    picks = {}
    path = Path(args.out) / "precision.jsonl"
    records = []
    for side in SIDES:
        wanted = getattr(args, f"{side}_precision")
        if wanted != "auto":
            picks[side] = wanted
            continue
        for _ in range(args.pick_rounds):
            for precision in PRECISIONS:
                record = run_worker(python[side], side, args, precision=precision, steps=args.pick_steps,
                                    evaluate=False)
                line = {"side": side, "precision": precision, "steps": record["steps"],
                        "sec_per_step": seconds_per_step(record), "threads": args.threads}
                records.append(line)
                with open(path, "a") as f:
                    f.write(json.dumps(line) + "\n")
                print(f"precision: {side} {precision} {line['sec_per_step']:.3f} s/step", flush=True)
        mean = {p: statistics.mean(r["sec_per_step"] for r in records if r["side"] == side and r["precision"] == p)
                for p in PRECISIONS}
        picks[side] = min(mean, key=mean.get)
    return picks


def build_config(args):
    from grpo_lab.config.loading import load_config, with_overrides

    config = load_config(args.config, list(args.set or []))
    dotted = {"train.device": "cpu", "train.eval_table": 0, "advantage.eps": TRL_STD_EPS}
    for key, flag in (("train.steps", "steps"), ("train.eval_every", "eval_every"),
                      ("train.eval_prompts", "eval_prompts"), ("train.eval_samples", "eval_samples")):
        if getattr(args, flag) is not None:
            dotted[key] = getattr(args, flag)
    config = with_overrides(config, **dotted)
    unmatched = []
    if config.method != "grpo" or config.advantage.estimator != "group" or config.advantage.scale != "group":
        unmatched.append("method grpo with group advantages scaled by the group std")
    if config.loss.aggregation != "seq_mean_token_mean" or config.loss.kl_beta != 0:
        unmatched.append("loss.aggregation seq_mean_token_mean and loss.kl_beta 0")
    if config.optim.minibatches != 1 or config.optim.warmup_steps != 0 or config.optim.micro_batch_size != 0:
        unmatched.append("one optimizer update per pass, no warm-up, no micro-batches")
    if config.rollout.dynamic_sampling or config.rollout.mask_truncated or config.rollout.overlong_buffer:
        unmatched.append("no dynamic sampling or overlong handling")
    if unmatched:
        raise SystemExit("the TRL side is set up for " + "; ".join(unmatched) + ": change the config back")
    return config


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "experiments" / "grpo_chain.yaml"))
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override (repeatable)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=None, help="RL steps per run (default: the config's train.steps)")
    p.add_argument("--grpo-lab-steps", type=int, default=None,
                   help="RL steps of the grpo-lab side (default: twice the steps, so that its curve goes on past "
                        "TRL's last step and shows when it reaches TRL's final accuracy)")
    p.add_argument("--eval-every", type=int, default=20)
    p.add_argument("--eval-prompts", type=int, default=None, help="default: the config's train.eval_prompts")
    p.add_argument("--eval-samples", type=int, default=None, help="default: the config's train.eval_samples")
    p.add_argument("--threads", type=int, default=2, help="torch threads on both sides")
    p.add_argument("--grpo-lab-precision", choices=("auto", *PRECISIONS), default="auto")
    p.add_argument("--trl-precision", choices=("auto", *PRECISIONS), default="auto")
    p.add_argument("--pick-steps", type=int, default=8, help="steps per run of the precision measurement")
    p.add_argument("--pick-rounds", type=int, default=1, help="runs per side and precision in that measurement")
    p.add_argument("--pick-precision", action="store_true", help="only measure the precisions, then stop")
    p.add_argument("--trl-python", default="/tmp/trlvenv/bin/python", help="an interpreter with TRL and grpo-lab")
    p.add_argument("--out", default=None, help="default: results/learning_vs_trl (--quick: .../quick)")
    p.add_argument("--quick", action="store_true",
                   help=f"the whole path, small: {', '.join(f'{k}={v}' for k, v in QUICK.items())}")
    p.add_argument("--resume", action="store_true", help="keep the runs already in OUT/runs.jsonl, run the rest")
    p.add_argument("--report-only", action="store_true", help="write README.md and the plot from OUT's lines")
    p.add_argument("--worker", choices=("grpo_lab", "trl", "warm"), help=argparse.SUPPRESS)
    p.add_argument("--config-file", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    p.add_argument("--worker-steps", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--no-eval", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        from grpo_lab.config.loading import load_config, with_overrides

        config = load_config(args.config_file)
        if args.worker_steps:
            config = with_overrides(config, **{"train.steps": args.worker_steps})
        if args.worker == "warm":
            record = warm_worker(config)
        else:
            work = grpo_lab_worker if args.worker == "grpo_lab" else trl_worker
            record = work(config, seed=args.seed, precision=args.precision, threads=args.threads,
                          evaluate=not args.no_eval)
        Path(args.result).write_text(json.dumps(record))
        return 0

    if args.quick:
        for key, value in QUICK.items():
            if key == "seeds" or getattr(args, key) in (None, p.get_default(key)):
                setattr(args, key, value)
    args.out = args.out or str(ROOT / "results" / "learning_vs_trl" / ("quick" if args.quick else ""))
    out = Path(args.out)
    if args.report_only:
        write_report(out)
        return 0
    if not Path(args.trl_python).exists():
        raise SystemExit(f"--trl-python {args.trl_python} does not exist; make TRL's environment (module docstring)")
    check = subprocess.run([args.trl_python, "-c", "import trl"], capture_output=True, text=True)
    if check.returncode != 0:
        raise SystemExit(f"{args.trl_python} cannot import trl:\n{check.stderr[-1000:]}")
    out.mkdir(parents=True, exist_ok=True)
    config = build_config(args)
    (out / "config.yaml").write_text(config.to_yaml())
    python = {"grpo_lab": sys.executable, "trl": args.trl_python}
    started = time.strftime("%Y-%m-%d %H:%M")
    done = set()
    if args.resume and (out / "runs.jsonl").exists():
        done = {(r["side"], r["seed"]) for r in read_lines(out / "runs.jsonl")}
    else:
        for name in ("curves.jsonl", "runs.jsonl", "precision.jsonl"):
            (out / name).unlink(missing_ok=True)
    warm = run_worker(python["grpo_lab"], "warm", args)
    print(f"warm start: {warm['sft_path']} ({warm['seconds']:.0f} s)", flush=True)
    meta = {"command": " ".join(["python", *sys.argv]) if argv is None else " ".join(argv), "started": started,
            "machine": machine(), "load_at_start": os.getloadavg(), "threads": args.threads,
            "sft_path": warm["sft_path"], "quick": args.quick, "steps": config.train.steps,
            "grpo_lab_steps": args.grpo_lab_steps or 2 * config.train.steps}
    previous = json.loads((out / "meta.json").read_text()) if args.resume and (out / "meta.json").exists() else {}
    if previous.get("precision"):
        meta["precision"] = previous["precision"]
    else:
        meta["precision"] = pick_precision(args, python)
    print(f"precision: {meta['precision']}", flush=True)
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    if args.pick_precision:
        return 0
    for seed in range(args.seeds):
        for side in SIDES:
            if (side, seed) in done:
                continue
            record = run_worker(python[side], side, args, seed=seed, precision=meta["precision"][side],
                                steps=meta["grpo_lab_steps"] if side == "grpo_lab" else 0)
            with open(out / "curves.jsonl", "a") as f:
                for row in record.pop("curve"):
                    f.write(json.dumps(row) + "\n")
            with open(out / "runs.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            print(f"{side} seed {seed}: {record['steps']} steps in {record['rl_wall_s']:.1f} s of RL wall time "
                  f"({seconds_per_step(record):.3f} s/step)", flush=True)
    meta["finished"] = time.strftime("%Y-%m-%d %H:%M")
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    print(write_report(out))
    return 0


def machine() -> dict:
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
        cpu += " (avx512_bf16)" if "avx512_bf16" in flags else ""
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu or platform.processor(), "cores": os.cpu_count(), "platform": platform.platform()}


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


# ----- the report --------------------------------------------------------------------------------
def mean_curve(rows: list[dict], side: str) -> list[dict]:
    """At each evaluation step that every seed of `side` reached: mean RL wall time and mean accuracy."""
    seeds = sorted({r["seed"] for r in rows if r["side"] == side})
    by_step: dict[int, list[dict]] = {}
    for r in rows:
        if r["side"] == side:
            by_step.setdefault(r["step"], []).append(r)
    return [{"step": step, "rl_wall_s": statistics.mean(r["rl_wall_s"] for r in got),
             "accuracy": statistics.mean(r["accuracy"] for r in got)}
            for step, got in sorted(by_step.items()) if len(got) == len(seeds)]


def first_reach(curve: list[dict], target: float, x: str = "rl_wall_s"):
    """Where a curve first reaches `target`, linearly interpolated between evaluations; None if never."""
    for i, point in enumerate(curve):
        if point["accuracy"] >= target - 1e-12:
            if i == 0:
                return point[x]
            a, b = curve[i - 1], point
            return a[x] + (target - a["accuracy"]) / (b["accuracy"] - a["accuracy"]) * (b[x] - a[x])
    return None


def fmt(value, spec: str = ".1f", none: str = "not reached") -> str:
    return none if value is None else format(value, spec)


def plot(rows: list[dict], curves: dict, target: float, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    colors = {"grpo_lab": "tab:blue", "trl": "tab:orange"}
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for side in SIDES:
        for seed in sorted({r["seed"] for r in rows if r["side"] == side}):
            mine = sorted((r for r in rows if r["side"] == side and r["seed"] == seed), key=lambda r: r["step"])
            ax.plot([r["rl_wall_s"] for r in mine], [r["accuracy"] for r in mine], color=colors[side], alpha=0.25,
                    lw=0.8)
        ax.plot([c["rl_wall_s"] for c in curves[side]], [c["accuracy"] for c in curves[side]], color=colors[side],
                lw=2, marker="o", ms=3, label=f"{side} (mean over seeds)")
    ax.axhline(target, color="grey", ls="--", lw=1, label="TRL's final accuracy")
    ax.set_xlabel("RL wall time (s, evaluation excluded)")
    ax.set_ylabel("held-out accuracy (sampled)")
    ax.legend(loc="lower right", fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def seed_curve(rows: list[dict], side: str, seed: int) -> list[dict]:
    return sorted((r for r in rows if r["side"] == side and r["seed"] == seed), key=lambda r: r["step"])


def same_step(rows: list[dict], seeds: list[int], step: int) -> list[str]:
    """Both sides' accuracy at one step, paired by seed (same prompts and evaluation draws)."""
    from grpo_lab.analysis.estimators import difference_t_interval

    at = {side: [next((r["accuracy"] for r in seed_curve(rows, side, seed) if r["step"] == step), None)
                 for seed in seeds] for side in SIDES}
    if any(v is None for values in at.values() for v in values):
        return []
    d = difference_t_interval(at["grpo_lab"], at["trl"], paired=True)
    band = "" if d.low != d.low else f", paired 95% t interval [{d.low:+.4f}, {d.high:+.4f}]"
    return ["", f"Step for step: at step {step} grpo-lab {statistics.mean(at['grpo_lab']):.4f}, "
            f"TRL {statistics.mean(at['trl']):.4f}, difference {d.estimate:+.4f}{band} over {len(seeds)} seeds."]


def thresholds(curves: dict, target: float) -> list[str]:
    """Time of each mean curve to reach a ladder of accuracies, and the ratio: the comparison does not
    hang on one noisy target."""
    start = curves["trl"][0]["accuracy"]
    top = min(max(c["accuracy"] for c in curves[side]) for side in SIDES)
    ladder = [math.floor(1000 * (start + f * (top - start))) / 1000 for f in (0.5, 0.75, 0.9, 1.0)]
    lines = ["", "### Time to a ladder of accuracies (mean curves)", "",
             f"From the start ({start:.4f}) to the best accuracy both mean curves reach ({top:.4f}); TRL's final "
             f"accuracy is {target:.4f}.", "",
             "| accuracy | grpo-lab (s) | TRL (s) | ratio grpo-lab / TRL |", "|---|---|---|---|"]
    for level in ladder:
        a, b = first_reach(curves["grpo_lab"], level), first_reach(curves["trl"], level)
        ratio = f"{a / b:.3f}" if a is not None and b else "-"
        lines.append(f"| {level:.3f} | {fmt(a)} | {fmt(b)} | {ratio} |")
    return lines


def write_report(out: Path) -> str:
    """README.md (and accuracy_vs_time.png) from OUT's lines; returns the README's text."""
    from grpo_lab.analysis.estimators import t_interval

    rows, runs = read_lines(out / "curves.jsonl"), read_lines(out / "runs.jsonl")
    picks = read_lines(out / "precision.jsonl")
    meta = json.loads((out / "meta.json").read_text()) if (out / "meta.json").exists() else {}
    if not rows or not {r["side"] for r in runs} >= set(SIDES):
        raise SystemExit(f"{out} holds no finished run of each side yet")
    curves = {side: mean_curve(rows, side) for side in SIDES}
    trl_finals = [max((r for r in rows if r["side"] == "trl" and r["seed"] == run["seed"]),
                      key=lambda r: r["step"])["accuracy"] for run in runs if run["side"] == "trl"]
    target_ci = t_interval(trl_finals)
    target = target_ci.estimate
    reach = {side: first_reach(curves[side], target) for side in SIDES}
    reach_step = {side: first_reach(curves[side], target, x="step") for side in SIDES}
    ratio = reach["grpo_lab"] / reach["trl"] if reach["grpo_lab"] is not None and reach["trl"] else None
    plotted = plot(rows, curves, target, out / "accuracy_vs_time.png")
    seeds = sorted({r["seed"] for r in runs})
    versions = {run["side"]: run["versions"] for run in runs}
    precision = meta.get("precision", {side: runs[0]["precision"] for side in SIDES})

    lines = ["# Time to accuracy: grpo-lab against TRL's GRPOTrainer", ""]
    if meta.get("quick"):
        lines += ["**A --quick run: a few steps of one seed on a small evaluation, to check the path end to end. "
                  "Its numbers say nothing about the comparison.**", ""]
    lines += [
        "Both sides start from grpo-lab's SFT warm start of the config (a Hugging Face folder TRL loads as its "
        "model), train on the same chain-task prompts in the same order, with the same reward (the right answer "
        "and EOS, which TRL's side reads from the completion's token ids) and matched hyperparameters, and are "
        "evaluated by the same evaluator (grpo-lab's sampled held-out accuracy, on a float32 copy of the weights). "
        "The x axis is RL wall time: from the start of training, with the clock stopped during evaluations. "
        "`analysis/learning_vs_trl.py` says how each piece is set up.", "",
        "## How it was run", "",
        f"- command: `{meta.get('command', '?')}`, {meta.get('started', '?')} to {meta.get('finished', '?')}",
        f"- machine: {meta.get('machine', {}).get('cpu', '?')}, {meta.get('machine', {}).get('cores', '?')} cores, "
        f"{meta.get('threads', '?')} torch threads per side, load average at the start "
        f"{', '.join(f'{x:.2f}' for x in meta.get('load_at_start', []))}",
        f"- seeds {', '.join(map(str, seeds))}, run alternately (grpo-lab, then TRL, for each seed), one process "
        "at a time",
    ]
    for side in SIDES:
        v = versions.get(side, {})
        lines.append(f"- {side}: precision **{precision.get(side, '?')}**; " + ", ".join(f"{k} {x}" for k, x in v.items()))
    config_text = (out / "config.yaml").read_text() if (out / "config.yaml").exists() else ""
    if config_text:
        import yaml

        c = yaml.safe_load(config_text)
        r, o, t = c["rollout"], c["optim"], c["train"]
        lines += [
            f"- matched: P={r['prompts_per_step']} prompts x G={r['group_size']} completions, {t['steps']} steps "
            f"(grpo-lab's curve goes on to step {meta.get('grpo_lab_steps', t['steps'])}), "
            f"lr {o['lr']:g} constant, beta {c['loss']['kl_beta']:g}, mu {o['epochs']}, grad clip {o['grad_clip']:g}, "
            f"AdamW betas ({o['beta1']:g}, {o['beta2']:g}), weight decay {o['weight_decay']:g}, temperature "
            f"{r['temperature']:g}, top-p {r['top_p']:g}, at most {r['max_new_tokens']} completion tokens, "
            "per-sequence token mean (TRL `loss_type=\"grpo\"`), group-std advantages (+1e-4)",
            f"- evaluation: {t['eval_prompts']} held-out prompts x {t['eval_samples']} samples at temperature "
            f"{t['eval_temperature']:g}, every {t['eval_every']} steps and at the end",
        ]
    if picks:
        lines += ["", "### Precision (seconds per step after the first, no evaluation)", "",
                  "| side | precision | steps | s/step |", "|---|---|---|---|"]
        lines += [f"| {q['side']} | {q['precision']} | {q['steps']} | {q['sec_per_step']:.3f} |" for q in picks]
    lines += ["", "## Held-out accuracy against RL wall time (mean over seeds)", ""]
    if plotted:
        lines += ["![accuracy against RL wall time](accuracy_vs_time.png)", ""]
    lines += ["| step | grpo-lab wall (s) | grpo-lab accuracy | TRL wall (s) | TRL accuracy |", "|---|---|---|---|---|"]
    trl_at = {c["step"]: c for c in curves["trl"]}
    for c in curves["grpo_lab"]:
        other = trl_at.get(c["step"])
        lines.append(f"| {c['step']} | {c['rl_wall_s']:.1f} | {c['accuracy']:.4f} | "
                     + (f"{other['rl_wall_s']:.1f} | {other['accuracy']:.4f} |" if other else "| |"))
    ci = "" if target_ci.low != target_ci.low else f", 95% t interval [{target_ci.low:.4f}, {target_ci.high:.4f}]"
    lines += ["", "## Time to TRL's final accuracy", "",
              f"TRL's final accuracy: **{target:.4f}** (mean of {len(trl_finals)} seeds{ci}).", "",
              "| | grpo-lab | TRL |", "|---|---|---|",
              f"| RL wall time to first reach it, mean curve (s) | {fmt(reach['grpo_lab'])} | {fmt(reach['trl'])} |",
              f"| step at which the mean curve first reaches it | {fmt(reach_step['grpo_lab'])} | "
              f"{fmt(reach_step['trl'])} |"]
    per_seed = {}
    for side in SIDES:
        for seed in seeds:
            per_seed[side, seed] = first_reach(seed_curve(rows, side, seed), target)
    for seed in seeds:
        lines.append(f"| seed {seed}: RL wall time to reach it (s) | {fmt(per_seed['grpo_lab', seed])} | "
                     f"{fmt(per_seed['trl', seed])} |")
    step_s = {side: statistics.mean(seconds_per_step(run) for run in runs if run["side"] == side) for side in SIDES}
    totals = {side: statistics.mean(run["rl_wall_s"] for run in runs if run["side"] == side) for side in SIDES}
    last = {side: curves[side][-1] for side in SIDES}
    lines += [f"| last evaluation, mean curve: step, accuracy | {last['grpo_lab']['step']}, "
              f"{last['grpo_lab']['accuracy']:.4f} | {last['trl']['step']}, {last['trl']['accuracy']:.4f} |",
              f"| RL wall time of the whole run (s) | {totals['grpo_lab']:.1f} | {totals['trl']:.1f} |",
              f"| seconds per step (after the first) | {step_s['grpo_lab']:.3f} | {step_s['trl']:.3f} |", ""]
    if ratio is not None:
        verdict = "meets" if ratio <= 1 / 3 else "misses"
        lines += [f"Ratio grpo-lab / TRL of the time to reach it: **{ratio:.3f}** ({1 / ratio:.2f}x faster): "
                  f"{verdict} the goal of at most 1/3."]
        if reach_step["grpo_lab"] is not None and reach_step["trl"]:
            lines += ["", f"It splits into steps and seconds per step: grpo-lab needs "
                      f"{reach_step['grpo_lab'] / reach_step['trl']:.2f}x TRL's steps to get there, at "
                      f"{step_s['grpo_lab'] / step_s['trl']:.2f}x its seconds per step (the product differs "
                      "from the ratio by the first step's warm-up and the interpolation)."]
    else:
        lines += [f"grpo-lab's mean curve does not reach TRL's final accuracy within {last['grpo_lab']['step']} "
                  f"steps ({totals['grpo_lab']:.1f} s); the ratio is undefined."
                  if reach["grpo_lab"] is None else "TRL's time is 0: no ratio."]
    lines += same_step(rows, seeds, last["trl"]["step"]) + thresholds(curves, target)

    lines += ["", "## Where the time goes (mean seconds per step, RL clock)", "",
              "| grpo-lab phase | s/step | share |", "|---|---|---|"]
    per_step = {side: [{k: v / run["steps"] for k, v in run["phases"].items()} | {"all": run["rl_wall_s"] / run["steps"]}
                       for run in runs if run["side"] == side] for side in SIDES}

    def phase(side: str, key: str) -> float:
        return statistics.mean(p.get(key, 0.0) for p in per_step[side])

    names = {"gen_s": "sampling (rollout, `perf/gen_s`)",
             "logprob_s": "advantages and objective preparation (`perf/logprob_s`)",
             "update_s": "loss forward, backward and AdamW (`perf/update_s`)",
             "loop_s": "Lightning's loop and logging between steps"}
    lines += [f"| {label} | {phase('grpo_lab', key):.4f} | {phase('grpo_lab', key) / phase('grpo_lab', 'all'):.0%} |"
              for key, label in names.items()]
    trl_rows = [("sampling (`_generate_single_turn`: `model.generate`)", phase("trl", "gen_s")),
                ("reward function", phase("trl", "reward_s")),
                ("the rest of `_prepare_inputs` (tokenizing, padding, advantages, metrics)",
                 phase("trl", "prepare_s") - phase("trl", "gen_s") - phase("trl", "reward_s")),
                ("loss forward (`compute_loss`)", phase("trl", "loss_forward_s")),
                ("backward, AdamW, Trainer's loop and logging", phase("trl", "backward_optim_loop_s"))]
    lines += ["", "| TRL phase | s/step | share |", "|---|---|---|"]
    lines += [f"| {label} | {value:.4f} | {value / phase('trl', 'all'):.0%} |" for label, value in trl_rows]
    gen = {side: phase(side, "gen_s") for side in SIDES}
    rest = {side: phase(side, "all") - gen[side] for side in SIDES}
    lines += ["", f"Side by side, per step: sampling {gen['trl']:.4f} s (TRL) against {gen['grpo_lab']:.4f} s "
              f"(grpo-lab), {gen['trl'] / max(gen['grpo_lab'], 1e-9):.2f}x; everything after sampling "
              f"{rest['trl']:.4f} s against {rest['grpo_lab']:.4f} s, {rest['trl'] / max(rest['grpo_lab'], 1e-9):.2f}x."]
    lines += ["", "## What is not the same on both sides", "",
              "- Random draws: each side samples its completions from its own generator, so the two runs of one seed "
              "share their prompts and their evaluation draws, not their rollouts.",
              "- The ratio's old log-probs: with mu = 1 TRL takes the detached log-probs of its loss forward (the "
              "ratio is exactly 1), grpo-lab the sampler's log-probs kept from the rollout (the ratio is 1 up to the "
              "rounding that tells the sampling forward from the training forward apart, more of it under bf16 "
              "autocast); neither spends a forward on them.",
              "- The loss forward: TRL computes the log-probs of the completion tokens with its own fused head, "
              "grpo-lab with its lean Qwen2 path; both at the precision named above.",
              "- Each trainer's loop (Lightning's, transformers' Trainer) is counted on its side: it is part of what a "
              "user of either waits for.",
              "", "## Files", "",
              "- `curves.jsonl`: one line per evaluation (side, seed, step, rl_wall_s, rl_cpu_s, accuracy, "
              "greedy_accuracy, eval_s)",
              "- `runs.jsonl`: one line per run (step end times, phases, rewards, versions)",
              "- `precision.jsonl`: the precision measurement; `config.yaml`: the config both sides ran; `logs/`: "
              "each worker's output", ""]
    text = "\n".join(lines)
    (out / "README.md").write_text(text)
    return text


if __name__ == "__main__":
    sys.exit(main())
