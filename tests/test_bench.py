"""`grpo-lab bench` runs the real GRPO step and reports its JSON fields (smoke test, not timed)."""

from __future__ import annotations

import json
import sys

import pytest

from grpo_lab.cli import main
from grpo_lab.config import ConfigError


def test_bench_prints_one_json_line_with_the_step_split(capsys):
    code = main(["bench", "--hidden", "32", "--layers", "1", "--prompts", "2", "--gens", "2", "--max-new", "4",
                 "--steps", "2", "--warmup", "1", "--fixed-length", "--threads", "1"])
    assert code == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    record = json.loads(lines[-1])
    assert record["method"] == "grpo" and record["device"] == "cpu" and record["dtype"] == "float32"
    assert record["steps"] == 2
    # fixed length: every completion is exactly --max-new tokens
    assert record["tokens_per_step"] == 2 * 2 * 4
    assert record["sec_per_step"] > 0 and record["completions_per_s"] == pytest.approx(4 / record["sec_per_step"], rel=1e-3)
    assert record["tokens_per_s"] == pytest.approx(16 / record["sec_per_step"], rel=1e-3)
    assert record["peak_mem_kind"] == "rss" and record["peak_mem_mib"] > 10
    assert set(record["split_s"]) == {"gen_s", "logprob_s", "update_s"}
    assert all(v > 0 for v in record["split_s"].values())
    assert sum(record["split_s"].values()) <= record["sec_per_step"] * 1.5


def test_bench_refuses_zero_warmup():
    from grpo_lab.bench import bench

    with pytest.raises(ConfigError, match="warmup"):
        bench(hidden=32, layers=1, warmup=0)


def test_bench_unknown_method_is_a_clear_error(capsys):
    assert main(["bench", "--hidden", "32", "--layers", "1", "--method", "nope"]) == 2
    assert "method" in capsys.readouterr().err


def test_bench_micro_batch_flag_reaches_the_config(capsys):
    code = main(["bench", "--hidden", "32", "--layers", "1", "--prompts", "2", "--gens", "2", "--max-new", "4",
                 "--steps", "1", "--warmup", "1", "--fixed-length", "--threads", "1", "--micro-batch", "2"])
    assert code == 0
    record = json.loads([line for line in capsys.readouterr().out.splitlines() if line.strip()][-1])
    assert record["micro_batch"] == 2


def _analysis_script(name: str):
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).parent.parent / "analysis" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_memory_phases_files_samples_under_the_running_phase():
    import time

    phases = _analysis_script("memory_phases")

    class Step:
        def update(self):
            block = bytearray(64 * 2**20)  # 64 MiB, touched, held for a while
            time.sleep(0.2)
            return len(block)

    meter = phases.PhaseMeter(interval=0.002)
    meter.wrap(Step, "update")
    time.sleep(0.05)
    assert Step().update() == 64 * 2**20
    time.sleep(0.05)
    assert meter.phase == "other"
    assert meter.peaks["update"] >= meter.peaks["other"] + 32  # the block was seen in its phase only


@pytest.mark.parametrize("kv_heads", [4, 2])
def test_step_floor_counts_two_flops_per_weight_per_token_forward_and_three_times_that_to_update(kv_heads):
    from transformers import Qwen2Config

    floor = _analysis_script("step_floor")
    cfg = Qwen2Config(hidden_size=64, intermediate_size=256, num_attention_heads=4, num_key_value_heads=kv_heads,
                      num_hidden_layers=3, vocab_size=17)
    U, G, T, width = 2, 3, 5, 7
    counts = floor.step_products(cfg, prompts=U, gens=G, max_new=T, width=width)
    flops = {k: sum(2 * n * rows * i * o for (_, rows, i, o), n in c.items()) for k, c in counts.items()}
    layer_weights = 2 * 64 * 64 + 2 * 64 * (kv_heads * 16) + 3 * 64 * 256  # q, o; k, v (head_dim 16); MLP
    head = 64 * 17
    tokens = U * width + U * G * (T - 1)  # each prompt once, the last completion token not run
    assert flops["ref"] == 2 * (3 * layer_weights * tokens + head * U * G * T)
    assert flops["update"] == 3 * flops["ref"]
    # sampling: the prompt pass, then one row per completion for each of the T - 1 decoding steps
    assert flops["gen"] == 2 * (3 * layer_weights * (U * width + U * G * (T - 1)) + head * (U + U * G * (T - 1)))


def test_bench_under_ddp_reports_once_for_the_whole_step(tmp_path):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "grpo_lab.cli", "bench", "--hidden", "32", "--layers", "1", "--prompts", "2",
           "--gens", "2", "--max-new", "4", "--steps", "1", "--warmup", "1", "--fixed-length", "--threads", "1",
           "--devices", "2"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1  # process 1 stays silent
    record = json.loads(lines[0])
    assert record["devices"] == 2 and record["threads"] == 1
    assert record["tokens_per_step"] == 2 * 2 * 4  # both processes' completions: the whole step
