"""`grpo-lab eval` and `grpo-lab export` on a finished GRPO run (the chain task, the character
tokenizer): the export loads with transformers and writes the run's greedy completions; evaluating it,
the run id, the run folder or the checkpoint gives the run's final evaluation; the completions
table of the run is readable through MLflow's API."""

from __future__ import annotations

import copy

import mlflow
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY
from golden.scenarios import stored_warm_start
from grpo_lab.cli import main
from grpo_lab.config import from_dict, merge
from grpo_lab.engine.engine import TABLE_FILE
from grpo_lab.runs.checkpoint import load_checkpoint

EVAL_KEYS = ("eval/greedy_accuracy", "eval/accuracy", "eval/pass_at_4", "eval/maj_at_4")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-step GRPO run from a warm start that gets some answers right (the golden runs' stored one:
    trained on the machine at hand, 150 steps at lr 1e-2 may land on one that gets none right),
    logged to its own store."""
    from grpo_lab.runs import run

    root = tmp_path_factory.mktemp("eval_export")
    data = merge(copy.deepcopy(TINY), {
        "sft": {"steps": 150, "lr": 1e-2, "cache_dir": str(root / "sft")},
        "train": {"steps": 2, "eval_prompts": 32, "eval_table": 5, "out_dir": str(root / "runs")},
        "tracking": {"uri": f"sqlite:///{root}/mlflow.db", "experiment": "tests"},
    })
    config = from_dict(data)
    stored_warm_start(config.sft_hash(), root / "sft")
    torch.set_num_threads(1)
    result = run(config, progress=False)
    return root, config, result


def test_the_completions_table_is_readable_through_mlflow(trained):
    root, config, result = trained
    store = mlflow.tracking.MlflowClient(config.tracking.resolved_uri)
    experiment = store.get_experiment_by_name("tests").experiment_id
    table = store.load_table(experiment, TABLE_FILE, run_ids=[result.run_id])
    assert sorted(set(table["step"])) == [0, 2] and len(table) == 10  # 5 rows at each evaluation
    assert {"prompt", "completion", "finished", "answer", "extracted", "correct", "reward"} <= set(table.columns)
    def text(value) -> str:  # pandas reads the answers back as numbers (NaN for None)
        return "" if pd.isna(value) else str(int(value)) if float(value).is_integer() else str(value)

    for row in table.itertuples():
        expected = bool(row.finished) and text(row.extracted) == text(row.answer)
        assert bool(row.correct) == expected and float(row.reward) == float(expected)
    first = table[table["step"] == 0]["prompt"].tolist()
    assert len(set(first)) == 5  # the first sample of five prompts, not five samples of one


def test_export_loads_with_transformers_and_writes_the_runs_greedy_completions(trained, tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from grpo_lab.engine import Engine
    from grpo_lab.rollout.encode import decode_completions
    from grpo_lab.runs.sources import load_source
    from grpo_lab.runs.task_setup import build_task_of

    root, config, result = trained
    out = tmp_path / "export"
    assert main(["export", result.run_id, "--out", str(out), "--tracking-uri", config.tracking.resolved_uri]) == 0
    files = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "grpo_lab.yaml"} <= files
    assert not any(name.endswith((".bin", ".pt", ".ckpt")) for name in files)
    # the exported tensors are the final checkpoint's policy, bit for bit
    final = {k[len("policy."):]: v for k, v in load_checkpoint(result.checkpoint)["state_dict"].items()
             if k.startswith("policy.")}
    exported = load_file(out / "model.safetensors")
    assert exported and all(torch.equal(exported[k], final[k]) for k in exported)

    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    run_policy = load_source(str(result.checkpoint))
    task = build_task_of(config)
    examples = list(task.eval_examples())[:12]
    engine = Engine(config, run_policy.policy, run_policy.tokenizer, task)
    rollout = engine.generate(examples, group_size=1, greedy=True)
    ours = decode_completions(run_policy.tokenizer, rollout.completion_ids, rollout.completion_mask)
    for example, text, finished in zip(examples, ours, rollout.finished.tolist()):
        ids = tokenizer(example.prompt, add_special_tokens=False, return_tensors="pt")
        generated = model.generate(**ids, max_new_tokens=config.rollout.max_new_tokens, do_sample=False,
                                   eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        new = generated[0, ids["input_ids"].shape[1]:].tolist()
        assert (tokenizer.eos_token_id in new) == finished
        if finished:
            new = new[: new.index(tokenizer.eos_token_id)]
        assert tokenizer.decode(new) == text

    capsys.readouterr()
    assert main(["eval", str(out), "--no-log"]) == 0  # the export carries the run's task and settings
    printed = capsys.readouterr().out
    greedy = result.metrics["eval/greedy_accuracy"]
    assert 0 < greedy and f"| eval/greedy_accuracy | {greedy:.4f} |" in printed


def test_every_source_of_a_run_evaluates_to_its_final_metrics(trained, tmp_path):
    from grpo_lab.runs.evaluate import evaluate_source
    from grpo_lab.runs.export import export
    from grpo_lab.runs.sources import load_source

    root, config, result = trained
    folder = result.checkpoint.parent
    export(str(folder), tmp_path / "export")
    uri = config.tracking.resolved_uri
    reports = {name: evaluate_source(load_source(source, tracking_uri=uri), log=False)
               for name, source in [("run id", result.run_id), ("folder", str(folder)),
                                    ("checkpoint", str(result.checkpoint)), ("export", str(tmp_path / "export"))]}
    for name, report in reports.items():
        assert report.prompts == 32 and report.samples == 4
        for key in EVAL_KEYS:  # the same prompts, the same evaluation draws: the run's own numbers
            assert report.metrics[key] == pytest.approx(result.metrics[key], abs=1e-12), (name, key)
            low, high = report.intervals[key]
            assert low <= report.metrics[key] <= high and high - low > 0, (name, key)
    logged = evaluate_source(load_source(result.run_id, tracking_uri=uri, overrides=["seed=3"]), split="train",
                             samples=2, temperature=0.5, prompts=6)
    assert (logged.prompts, logged.samples, logged.split) == (6, 2, "train") and "eval/pass_at_2" in logged.metrics
    store = mlflow.tracking.MlflowClient(uri)
    run = store.get_run(logged.run_id)
    assert run.data.tags["grpo_lab.eval_of_run"] == result.run_id and run.data.params["split"] == "train"
    for key in ("eval/greedy_accuracy", "eval/maj_at_2"):
        assert run.data.metrics[key] == pytest.approx(logged.metrics[key])
        assert run.data.metrics[f"{key}_ci_low"] <= run.data.metrics[key] <= run.data.metrics[f"{key}_ci_high"]
    table = store.load_table(store.get_experiment_by_name("tests").experiment_id, TABLE_FILE, run_ids=[logged.run_id])
    assert len(table) == 5 and set(table["prompt"]) <= {e.prompt for e in _train_examples(config)}


def _train_examples(config):
    from grpo_lab.runs.task_setup import build_task_of

    return build_task_of(config).train_examples()
