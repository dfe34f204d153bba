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
