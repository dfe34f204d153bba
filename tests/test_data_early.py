"""A data task's rows are checked before torch loads where the standard library can read them
(.jsonl/.json/.csv), a row without its answer key is told from one with an empty answer, and a run
that stops on its data leaves no run folder behind."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from grpo_lab.tasks import TaskError
from grpo_lab.tasks.data import plain_splits
from grpo_lab.tasks.dataset import check_rows_early

ROWS = [{"prompt": f"{i}+1=", "answer": str(i + 1)} for i in range(12)]


def data_config(tiny_config, tmp_path, rows, suffix=".jsonl"):
    file = tmp_path / f"rows{suffix}"
    if suffix == ".csv":
        file.write_text("prompt,answer\n" + "".join(f"{r['prompt']},{r.get('answer', '')}\n" for r in rows))
    else:
        file.write_text("".join(json.dumps(row) + "\n" for row in rows))
    data = tiny_config(**{"sft.steps": 2, "train.steps": 1}).to_dict()
    data["task"] = {"name": "dataset", "path": str(file), "eval_size": 2}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    return path, data


def without_answer(index):
    rows = [dict(row) for row in ROWS]
    del rows[index]["answer"]
    return rows


def with_answer(index, answer):
    rows = [dict(row) for row in ROWS]
    rows[index]["answer"] = answer
    return rows


@pytest.mark.parametrize("rows, suffix, says", [
    (without_answer(2), ".jsonl", "row 3 of {file} has no column 'answer' (task.columns.answer)"),
    (with_answer(2, ""), ".jsonl", "row 3 of {file} has an empty answer ('answer' is ''); give every row one"),
    (with_answer(2, "  "), ".jsonl", "has an empty answer ('answer' is '  ')"),
    (with_answer(2, None), ".jsonl", "row 3 of {file} has no answer: its 'answer' is null or missing"),
    (with_answer(2, ""), ".csv", "row 3 of {file} has an empty answer ('answer' is '')"),
])
def test_a_row_without_its_answer_stops_train_before_torch_loads(tiny_config, tmp_path, rows, suffix, says):
    path, data = data_config(tiny_config, tmp_path, rows, suffix)
    probe = ("import sys; from grpo_lab.cli import main; code = main(['train', %r, '--no-progress']); "
             "heavy = [m for m in ('torch', 'transformers', 'lightning', 'mlflow', 'datasets') if m in sys.modules]; "
             "print('CODE', code, 'HEAVY', heavy)" % str(path))
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert "CODE 2 HEAVY []" in out.stdout, out.stdout + out.stderr
    assert out.stderr.startswith("grpo-lab: error: dataset: ") and out.stderr.count("\n") == 1
    assert says.format(file=data["task"]["path"]) in out.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "sft").exists()


@pytest.mark.parametrize("rows, says", [
    (without_answer(4), "row 5 of {file} has no answer: its 'answer' is null or missing"),  # datasets makes it null
    (with_answer(4, ""), "row 5 of {file} has an empty answer ('answer' is '')"),
])
def test_a_run_that_stops_on_its_data_leaves_no_run_folder(tiny_config, tmp_path, rows, says):
    from grpo_lab.config import from_dict
    from grpo_lab.runs import run

    path, data = data_config(tiny_config, tmp_path, rows)
    with pytest.raises(TaskError) as caught:
        run(from_dict(data), progress=False)  # in Python: the rows are read by `datasets` when the task is built
    assert says.format(file=data["task"]["path"]) in str(caught.value)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "sft").exists()


def test_what_the_standard_library_cannot_read_is_left_to_the_task(tmp_path):
    (tmp_path / "rows.parquet").write_bytes(b"PAR1")
    assert plain_splits(str(tmp_path / "rows.parquet"), ("train", "test"), subset="default") is None
    assert not check_rows_early("dataset", seed=0, options={"path": str(tmp_path / "rows.parquet")})
    assert not check_rows_early("dataset", seed=0, options={"path": "openai/gsm8k"})  # a Hugging Face cache name
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    assert plain_splits(str(tmp_path / "bad.jsonl"), ("train", "test"), subset="default") is None
    (tmp_path / "good.jsonl").write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    assert check_rows_early("dataset", seed=0, options={"path": str(tmp_path / "good.jsonl"), "eval_size": 2})
