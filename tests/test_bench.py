"""`grpo-lab bench` runs the real GRPO step and reports its JSON fields (smoke test, not timed)."""

from __future__ import annotations

import json

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


def test_memory_phases_files_samples_under_the_running_phase():
    import importlib.util
    import pathlib
    import time

    path = pathlib.Path(__file__).parent.parent / "analysis" / "memory_phases.py"
    spec = importlib.util.spec_from_file_location("memory_phases", path)
    phases = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(phases)

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
