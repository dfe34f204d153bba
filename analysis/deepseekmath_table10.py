"""DeepSeekMath Table 10 (the unified paradigm) with each method's gradient coefficient measured
on one real batch; writes results/deepseekmath_table10/README.md.

The batch: the first RL step's P prompts x G completions sampled at temperature 1 from the SFT
warm start of the config (default experiments/grpo_chain.yaml), scored by the chain task's
verifier. Each method's GC (grpo_lab.core.paradigm) is computed on the rows that method would
train on, from the quantities its module computes:

    SFT            1 on every token (of the reference targets; shown on the sampled rows' mask)
    RFT, online RFT  I(o) on the sampled rows (identical at the first step: pi_theta = pi_sft)
    DPO            +-beta sigma(...) on the (correct, wrong) pairs the DPO module builds from them
    PPO            the GAE advantage with the critic as it starts (value head on the SFT trunk)
    GRPO outcome   the group-relative advantage (+ the KL term, 0 with loss.kl_beta: 0)
    GRPO process   the process-supervised advantage from the task's step rewards

Statistics are over completion tokens: mean, sd, and the fractions of tokens with GC > 0, = 0
and < 0 (|GC| < 1e-6 counts as 0).

    python analysis/deepseekmath_table10.py [--config experiments/grpo_chain.yaml] [--out results/deepseekmath_table10]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ZERO = 1e-6
COMMAND = "python analysis/deepseekmath_table10.py"


def gc_stats(gc: torch.Tensor, mask: torch.Tensor) -> dict:
    """mean, sd and sign fractions of GC over the tokens where mask == 1."""
    values = gc[mask > 0].double()
    return {"tokens": int(values.numel()), "rows": int((mask.sum(-1) > 0).sum()),
            "mean": float(values.mean()), "sd": float(values.std()) if values.numel() > 1 else float("nan"),
            "positive": float((values > ZERO).double().mean()), "zero": float((values.abs() <= ZERO).double().mean()),
            "negative": float((values < -ZERO).double().mean())}


def measure(config_path: str, overrides: list[str]) -> tuple[dict, dict]:
    from grpo_lab.config import load_config, with_overrides
    from grpo_lab.core import advantages as adv_lib
    from grpo_lab.core import paradigm
    from grpo_lab.core.shaping import last_token_rewards
    from grpo_lab.engine import module_class
    from grpo_lab.models.critic import ValueModel
    from grpo_lab.rollout.encode import pack_rows
    from grpo_lab.runs.train import build_task_for, quiet
    from grpo_lab.runs.warm_start import warm_start

    quiet()
    config = load_config(config_path, overrides)
    task = build_task_for(config)
    start = time.time()
    policy, tokenizer, sft_path = warm_start(config, task, progress=False)
    sft_seconds = time.time() - start
    torch.manual_seed(config.seed)
    module = module_class("grpo")(config, policy, tokenizer, task)
    G = config.rollout.group_size
    examples = module.prompts_for_step(0)
    with torch.no_grad():
        rollout = module.generate(examples, group_size=G)
        scored = module.score(rollout, examples, G)
        mask = rollout.completion_mask
        logp, _ = module.logprobs(rollout)
    rows = {}
    rows["sft"] = gc_stats(paradigm.gradient_coefficient("sft", mask=mask), mask)
    rft = paradigm.gradient_coefficient("rft", mask=mask, correct=scored.correct)
    rows["rft"] = gc_stats(rft, mask)
    rows["online_rft"] = gc_stats(paradigm.gradient_coefficient("online_rft", mask=mask, correct=scored.correct), mask)

    # DPO: the pairs its module builds from this batch; reference = the SFT policy = pi_theta now
    dpo = module_class("dpo")(with_overrides(config, method="dpo", **{"loss.kl_beta": 0.0}), policy, tokenizer, task)
    items = dpo.source.make_items(scored, G)
    if items:
        pairs = pack_rows([p for p, _, _ in items] * 2, [c for _, c, _ in items] + [r for _, _, r in items],
                          pad_id=tokenizer.pad_token_id)
        with torch.no_grad():
            pair_logp, _ = dpo.logprobs(pairs)
            pair_ref = dpo.ref_logprobs(pairs)
        gc = paradigm.gradient_coefficient("dpo", mask=pairs.completion_mask, logp=pair_logp, ref_logp=pair_ref,
                                           beta=config.dpo.beta)
        rows["dpo"] = gc_stats(gc, pairs.completion_mask)

    # PPO: GAE with the critic as PPO starts it (a value head on a copy of the SFT trunk)
    ppo_config = with_overrides(config, method="ppo", **{"advantage.estimator": "gae"})
    critic = ValueModel.from_policy(policy)
    cc = ppo_config.critic
    with torch.no_grad():
        values = critic(rollout.input_ids, rollout.attention_mask, rollout.completion_ids.shape[1])
        advantages, _ = adv_lib.gae(last_token_rewards(scored.rewards, mask), values, mask, gamma=cc.gamma,
                                    lam=cc.lam, whiten=cc.whiten)
    rows["ppo"] = gc_stats(paradigm.gradient_coefficient("ppo", mask=mask, advantages=advantages), mask)

    # GRPO outcome and process: the advantages each GRPO module computes; the reference is the SFT
    # policy, equal to pi_theta at the first step, so the KL part of GC is 0 whatever beta is
    outcome = module.estimator(module, scored).advantages
    rows["grpo"] = gc_stats(paradigm.gradient_coefficient(
        "grpo", mask=mask, advantages=outcome, logp=logp, ref_logp=logp, beta=config.loss.kl_beta), mask)
    process_module = module_class("grpo")(with_overrides(config, **{"advantage.estimator": "process"}), policy,
                                          tokenizer, task)
    process = process_module.estimator(process_module, scored).advantages
    rows["grpo_process"] = gc_stats(paradigm.gradient_coefficient(
        "grpo", mask=mask, advantages=process, logp=logp, ref_logp=logp, beta=config.loss.kl_beta), mask)

    uniform = adv_lib.zero_std_groups(scored.rewards, G)
    uniform_rows = uniform.repeat_interleave(G)
    wrong_rows = ~scored.correct
    batch = {"config": config_path, "overrides": overrides, "sft_path": str(sft_path), "sft_seconds": sft_seconds,
             "prompts": len(examples), "group_size": G, "accuracy": float(scored.correct.float().mean()),
             "reward_mean": float(scored.rewards.mean()), "uniform_groups": float(uniform.float().mean()),
             "all_correct_groups": float(scored.correct.view(-1, G).all(1).float().mean()),
             "all_wrong_groups": float((~scored.correct.view(-1, G)).all(1).float().mean()),
             "uniform_tokens": float(mask[uniform_rows].sum() / mask.sum()),
             "wrong_tokens": float(mask[wrong_rows].sum() / mask.sum()),
             "len_correct": float(mask[~wrong_rows].sum(-1).float().mean()) if (~wrong_rows).any() else float("nan"),
             "len_wrong": float(mask[wrong_rows].sum(-1).float().mean()) if wrong_rows.any() else float("nan"),
             "dpo_pairs": len(items), "tokens": int(mask.sum()), "kl_beta": config.loss.kl_beta,
             "dpo_beta": config.dpo.beta, "temperature": config.rollout.temperature,
             "sft_steps": config.sft.steps}
    return rows, batch


LABELS = {"sft": "SFT", "rft": "RFT", "online_rft": "Online RFT", "dpo": "DPO", "ppo": "PPO",
          "grpo": "GRPO (outcome)", "grpo_process": "GRPO (process)"}


def render(rows: dict, batch: dict, command: str) -> str:
    from grpo_lab.core.paradigm import format_table

    b = batch
    lines = [
        "# DeepSeekMath Table 10: the unified paradigm, with measured gradient coefficients", "",
        "Claim (DeepSeekMath §5.2.1): SFT, RFT, online RFT, DPO, PPO and GRPO differ only in their data "
        "source, their reward function and the gradient coefficient GC that weighs each token's "
        "grad log pi (Eq. 5). The table below is `grpo_lab.core.paradigm.TABLE` (`grpo-lab paradigm`); "
        "`tests/core` checks with autograd that each method's loss has gradient GC x grad log pi.", "",
        format_table(), "",
        "## GC measured on one batch", "",
        f"One batch: the first RL step's {b['prompts']} prompts x {b['group_size']} completions "
        f"({b['tokens']} completion tokens), sampled at temperature {b['temperature']:g} from the SFT warm start "
        f"({b['sft_steps']} SFT steps) of `{b['config']}`"
        + (f" with `{' '.join(b['overrides'])}`" if b["overrides"] else "") + ", on the chain task. "
        f"Batch accuracy {b['accuracy']:.3f}; {b['uniform_groups']:.0%} of the groups have all rewards equal "
        f"({b['all_correct_groups']:.0%} all correct, {b['all_wrong_groups']:.0%} all wrong). GRPO's reference "
        f"is the SFT policy, equal to pi_theta on this first batch, so its KL part of GC is 0 "
        f"(loss.kl_beta = {b['kl_beta']:g}); DPO's beta = {b['dpo_beta']:g} on its {b['dpo_pairs']} "
        "(correct, wrong) pairs; PPO's critic is the value head PPO starts with.", "",
        "| method | rows | tokens | GC mean | GC sd | GC > 0 | GC = 0 | GC < 0 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, r in rows.items():
        lines.append(f"| {LABELS[key]} | {r['rows']} | {r['tokens']} | {r['mean']:.4f} | {r['sd']:.4f} | "
                     f"{r['positive']:.3f} | {r['zero']:.3f} | {r['negative']:.3f} |")
    g, p, rft = rows["grpo"], rows["grpo_process"], rows["rft"]
    lines += [
        "", "## What the numbers say", "",
        f"- RFT and online RFT never push a token down: GC is 0 on the wrong completions "
        f"({rft['zero']:.1%} of tokens here; wrong completions hold {b['wrong_tokens']:.1%} of the tokens) "
        "and 1 on the right ones. At the first step they are the same method; they part ways only as "
        "online RFT's data source moves with pi_theta.",
        f"- GRPO's outcome GC is 0 on {g['zero']:.1%} of tokens, the tokens of the groups whose "
        f"{b['group_size']} rewards are all equal ({b['uniform_groups']:.0%} of groups, "
        f"{b['uniform_tokens']:.1%} of tokens): those groups carry no gradient. Elsewhere it is positive "
        f"on correct and negative on wrong completions ({g['positive']:.1%} / {g['negative']:.1%} of tokens). "
        f"Group normalisation centres it per sequence (a group's advantages sum to 0), so its token mean "
        f"({g['mean']:.3f}) departs from 0 only as far as wrong and correct completions differ in length "
        f"({b['len_wrong']:.1f} vs {b['len_correct']:.1f} tokens).",
        f"- Process supervision gives {p['zero']:.1%} zero-GC tokens against {g['zero']:.1%} for outcome "
        "supervision: step rewards differ between completions that share their outcome, so groups whose "
        "final answers all agree still carry a gradient, and a wrong answer's correct early steps are "
        f"credited. Its GC is larger (sd {p['sd']:.2f} against {g['sd']:.2f}) and leans negative "
        f"(mean {p['mean']:.3f}): each token's advantage sums the normalised rewards of every step that ends "
        "at or after it, so early tokens add up many steps; that the sum leans negative suggests the later "
        "steps of a chain are the ones more often wrong (not measured here).",
        f"- DPO's GC is +-beta sigma(0) = +-{b['dpo_beta'] / 2:g} while pi_theta = pi_ref: every pair pushes "
        f"its correct completion up and its wrong one down by the same amount per token, so the token "
        f"fractions ({rows['dpo']['positive']:.1%} up, {rows['dpo']['negative']:.1%} down) are the length "
        "ratio of correct to wrong completions." if "dpo" in rows else "- DPO: no (correct, wrong) pair in "
        "this batch.",
        "- PPO's critic starts at V = 0 (zero-initialised value head), so its first GAE advantage is "
        "lam^(tokens to the end) x r, whitened over the batch's tokens (critic.whiten): a token's sign says "
        "whether its discounted reward beats the batch's average. GC is almost never 0 and, unlike GRPO's, "
        "does not vanish on groups whose rewards all agree: the critic, not the group, is the baseline.",
        "", "## Reproduce", "", "```bash", command, "```", "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="experiments/grpo_chain.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=Path("results/deepseekmath_table10"))
    args = parser.parse_args(argv)
    rows, batch = measure(args.config, args.set)
    command = " ".join([COMMAND] + (["--config", args.config] if args.config != "experiments/grpo_chain.yaml" else [])
                       + [f"--set {s}" for s in args.set]
                       + (["--out", str(args.out)] if args.out != Path("results/deepseekmath_table10") else []))
    args.out.mkdir(parents=True, exist_ok=True)
    text = render(rows, batch, command)
    (args.out / "README.md").write_text(text)
    print(text)
    print(f"written: {args.out / 'README.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
