"""The `dataset` task: every data format and location, the column map, templates, splits, Unicode,
answer extractors and comparisons; GSM8K as its preset; tasks named by import path."""

from __future__ import annotations

import json
import textwrap

import pandas as pd
import pytest

from grpo_lab.models import char_tokenizer
from grpo_lab.tasks import Example, Task, TaskError, build_task
from grpo_lab.tasks.answers import COMPARISONS, EXTRACTORS, canonical, get_extractor
from tiny_models import gsm8k_rows, write_jsonl

MATH_ROWS = [  # MATH-style: the answer is the \boxed{} of a worked solution
    {"problem": f"Compute {a} + {b}.", "solution": f"We add: ${a} + {b} = \\boxed{{{a + b}}}$.", "level": f"Level {a % 3}"}
    for a, b in [(1, 2), (3, 4), (5, 6), (7, 8), (2, 9), (4, 4), (6, 1), (8, 3), (9, 9), (0, 5)]
]


# -- answers -------------------------------------------------------------------------------------


def test_extractors_by_hand():
    assert EXTRACTORS["hash"]("so 5 + 2 = 7\n#### 1,007 apples") == "1007"
    assert EXTRACTORS["hash"]("#### B\nthen more") == "B"
    assert EXTRACTORS["hash"]("no marker 7") is None
    assert EXTRACTORS["boxed"]("first \\boxed{3}, then \\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert EXTRACTORS["boxed"]("$\\boxed{ 12.50 }$") == "12.5"
    assert EXTRACTORS["boxed"]("\\boxed{7") is None  # unclosed
    assert EXTRACTORS["answer_is"]("The answer is: 42. Then 3.") == "42"
    assert EXTRACTORS["answer_is"]("the answer is blue\nok") == "blue"
    assert EXTRACTORS["last_number"]("3 apples and -4.0 pears") == "-4"
    assert EXTRACTORS["text"]("  Paris.  ") == "Paris"
    assert EXTRACTORS["auto"]("\\boxed{9} but the answer is 8") == "9"  # boxed before "answer is"
    assert EXTRACTORS["auto"]("no numbers") is None
    regex = get_extractor("regex", pattern=r"Final: (\w+)")
    assert regex("Final: x ... Final: yes") == "yes"
    with pytest.raises(ValueError, match="needs a pattern"):
        get_extractor("regex")
    assert canonical("$1,000.00") == "1000" and canonical("  ") is None
    assert COMPARISONS["numeric"]("0.3333334", "0.3333333", 1e-6)
    assert not COMPARISONS["numeric"]("0.34", "0.3333333", 1e-6)
    assert not COMPARISONS["exact"]("0.3333334", "0.3333333", 1e-6)
    assert COMPARISONS["numeric"]("x", "x", 1e-6) and not COMPARISONS["numeric"]("x", "y", 1e-6)


# -- formats and locations -----------------------------------------------------------------------


def write_all_formats(tmp_path, rows) -> dict:
    frame = pd.DataFrame(rows)
    paths = {"jsonl": write_jsonl(tmp_path / "d.jsonl", rows), "csv": tmp_path / "d.csv",
             "parquet": tmp_path / "d.parquet", "json": tmp_path / "d.json", "save_to_disk": tmp_path / "saved"}
    frame.to_csv(paths["csv"], index=False)
    frame.to_parquet(paths["parquet"])
    paths["json"].write_text(json.dumps(rows), encoding="utf-8")
    import datasets

    datasets.Dataset.from_list(rows).save_to_disk(str(paths["save_to_disk"]))
    return paths


def test_every_format_gives_the_same_examples(tmp_path):
    options = dict(columns={"prompt": "problem", "answer": "solution"}, eval_size=3)
    tasks = {fmt: build_task("dataset", seed=0, path=str(path), **options)
             for fmt, path in write_all_formats(tmp_path, MATH_ROWS).items()}
    first = tasks["jsonl"]
    assert isinstance(first, Task) and (len(first.train_examples()), len(first.eval_examples())) == (7, 3)
    for fmt, task in tasks.items():
        assert [(e.prompt, e.answer, e.target) for e in task.train_examples()] == \
               [(e.prompt, e.answer, e.target) for e in first.train_examples()], fmt
        assert list(task.eval_examples()) == list(first.eval_examples()), fmt


def test_a_saved_dataset_dict_and_a_folder_of_splits_give_their_splits(tmp_path):
    import datasets

    folder = tmp_path / "dd"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(MATH_ROWS[:6]),
                          "validation": datasets.Dataset.from_list(MATH_ROWS[6:])}).save_to_disk(str(folder))
    task = build_task("dataset", seed=0, path=str(folder), columns={"prompt": "problem", "answer": "solution"},
                      eval_split="validation")
    assert [e.prompt for e in task.eval_examples()] == [r["problem"] for r in MATH_ROWS[6:]]
    assert len(task.train_examples()) == 6
    splits = tmp_path / "splits"
    splits.mkdir()
    pd.DataFrame(MATH_ROWS[:7]).to_csv(splits / "train.csv", index=False)
    pd.DataFrame(MATH_ROWS[7:]).to_csv(splits / "test.csv", index=False)
    task = build_task("dataset", seed=0, path=str(splits), columns={"prompt": "problem", "answer": "solution"},
                      train_size=5, eval_size=100)  # sizes cap: 5 of 7 training rows, every test row
    assert (len(task.train_examples()), len(task.eval_examples())) == (5, 3)


def test_a_dataset_name_in_the_local_hub_cache(tmp_path):
    commit = "1" * 40
    repo = tmp_path / "datasets--acme--sums"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    pd.DataFrame(MATH_ROWS[:8]).to_parquet(repo / "snapshots" / commit / "train-00000-of-00001.parquet")
    pd.DataFrame(MATH_ROWS[8:]).to_parquet(repo / "snapshots" / commit / "test-00000-of-00001.parquet")
    task = build_task("dataset", seed=0, path="acme/sums", cache_dir=str(tmp_path),
                      columns={"prompt": "problem", "answer": "solution"})
    assert (len(task.train_examples()), len(task.eval_examples())) == (8, 2)


# -- rows -> examples ----------------------------------------------------------------------------


def test_column_map_template_boxed_answers_and_fields(tmp_path):
    path = write_jsonl(tmp_path / "math.jsonl", MATH_ROWS)
    task = build_task("dataset", seed=0, path=str(path), eval_size=2,
                      columns={"answer": "solution", "difficulty": "level"},
                      template="Problem: {problem} ({difficulty})\nSolution:")
    example = next(e for e in task.train_examples() if e.fields["problem"] == "Compute 3 + 4.")
    assert example.prompt == "Problem: Compute 3 + 4. (Level 0)\nSolution:"
    assert example.answer == "7"  # the \boxed{} of the solution (extractor auto)
    assert example.target == "We add: $3 + 4 = \\boxed{7}$."  # the answer column's text
    assert example.fields["difficulty"] == "Level 0" and example.fields["level"] == "Level 0"
    assert task.is_correct(example, "so \\boxed{7}", finished=True)
    assert not task.is_correct(example, "so \\boxed{7}", finished=False)
    assert not task.is_correct(example, "so \\boxed{8}", finished=True)
    assert task.extract_answer("\\boxed{7}") == "7"
    bare = build_task("dataset", seed=0, path=str(write_jsonl(tmp_path / "bare.jsonl", [
        {"prompt": f"{i}*2=", "answer": 2 * i, "note": "x"} for i in range(6)])), eval_size=1)
    assert sorted(e.answer for e in bare.train_examples() + bare.eval_examples()) == ["0", "10", "2", "4", "6", "8"]
    assert all(e.prompt.endswith("*2=") and e.target == e.answer for e in bare.train_examples())


def test_numeric_comparison_with_tolerance(tmp_path):
    rows = [{"prompt": f"1/{i}=", "answer": f"{1 / i:.6f}"} for i in range(1, 8)]
    path = write_jsonl(tmp_path / "div.jsonl", rows)
    exact = build_task("dataset", seed=0, path=str(path), eval_size=1, extractor="last_number")
    numeric = build_task("dataset", seed=0, path=str(path), eval_size=1, extractor="last_number",
                         compare="numeric", tolerance=1e-3)
    third = Example(prompt="1/3=", answer="0.333333", target="0.333333")
    assert not exact.is_correct(third, "0.3333", True) and numeric.is_correct(third, "0.3333", True)
    assert not numeric.is_correct(third, "0.34", True)


def test_a_seeded_split_of_one_file_is_disjoint_and_fixed(tmp_path):
    path = write_jsonl(tmp_path / "g.jsonl", gsm8k_rows(30) + gsm8k_rows(1))  # a repeated row
    build = lambda seed: build_task("dataset", seed=seed, path=str(path), eval_size=5,  # noqa: E731
                                    columns={"prompt": "question"})
    first, again, other = build(0), build(0), build(1)
    assert list(first.eval_examples()) == list(again.eval_examples())
    assert list(first.eval_examples()) != list(other.eval_examples())
    held_out = {e.prompt for e in first.eval_examples()}
    assert len(first.eval_examples()) == 5 and not held_out & {e.prompt for e in first.train_examples()}
    assert first.eval_examples()[0].answer == first.extract_answer(first.eval_examples()[0].target)  # the #### number


def test_unicode_is_kept_and_the_alphabet_comes_from_the_data(tmp_path):
    rows = [{"prompt": "Combien font 2 × 3 ? Café — “ok”", "answer": "6 €"}] + \
           [{"prompt": f"{i} + 1 ?", "answer": str(i + 1)} for i in range(5)]
    task = build_task("dataset", seed=0, path=str(write_jsonl(tmp_path / "u.jsonl", rows)), eval_size=1,
                      extractor="text")
    examples = [*task.train_examples(), *task.eval_examples()]
    cafe = next(e for e in examples if "Caf" in e.prompt)
    assert cafe.prompt == rows[0]["prompt"] and cafe.answer == "6 €"
    assert {"×", "é", "—", "“", "€"} <= set(task.alphabet)
    tokenizer = char_tokenizer(task.alphabet)
    ids = tokenizer(cafe.prompt, add_special_tokens=False)["input_ids"]
    assert tokenizer.unk_token_id not in ids and tokenizer.decode(ids) == cafe.prompt
    ascii_task = build_task("dataset", seed=0, path=str(tmp_path / "u.jsonl"), eval_size=1, ascii=True)
    mapped = next(e for e in [*ascii_task.train_examples(), *ascii_task.eval_examples()] if "Caf" in e.prompt)
    assert mapped.prompt == 'Combien font 2 * 3 ? Cafe - "ok"'


def test_gsm8k_is_the_dataset_task_with_gsm8k_defaults(tmp_path):
    rows = gsm8k_rows(12)
    rows[3]["question"] = "Jos\u00e9 has 2 + 2 \u2014 how many?"
    path = write_jsonl(tmp_path / "g.jsonl", rows)
    preset = build_task("gsm8k", seed=0, path=str(path), eval_size=3)
    plain = build_task("dataset", seed=0, path=str(path), eval_size=3, ascii=True, extractor="gsm8k",
                       columns={"prompt": "question"}, template="Question: {question}\nAnswer:")
    for a, b in zip([*preset.train_examples(), *preset.eval_examples()], [*plain.train_examples(), *plain.eval_examples()]):
        assert (a.prompt, a.answer) == (b.prompt, b.answer)
        assert a.target.endswith(f"\nThe answer is {a.answer}") and a.target.startswith(" ")
    assert any("Jose has" in e.prompt for e in [*preset.train_examples(), *preset.eval_examples()])
    kept = build_task("gsm8k", seed=0, path=str(path), eval_size=3, ascii=False)
    assert any("Jos\u00e9 has 2 + 2 \u2014" in e.prompt for e in [*kept.train_examples(), *kept.eval_examples()])
    chat = build_task("gsm8k", seed=0, path=str(path), eval_size=3, system_prompt="Be brief.",
                      chat_template=lambda messages: json.dumps(messages))
    first = chat.train_examples()[0]
    assert json.loads(first.prompt) == [{"role": "system", "content": "Be brief."},
                                        {"role": "user", "content": preset.train_examples()[0].prompt}]
    assert not first.target.startswith(" ")  # the assistant's turn starts the answer


# -- bad input -----------------------------------------------------------------------------------


def test_bad_rows_and_options_name_what_to_fix(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", MATH_ROWS)
    with pytest.raises(TaskError, match=r"row 1 of .*m.jsonl has no column 'answer' \(task.columns.answer\); its "
                                        r"columns: problem, solution, level"):
        build_task("dataset", seed=0, path=str(path), columns={"prompt": "problem"})
    with pytest.raises(TaskError, match=r"task.template names column 'question', which row 1 .* does not have"):
        build_task("dataset", seed=0, path=str(path), columns={"answer": "solution"}, template="Q: {question}")
    with pytest.raises(TaskError, match="not a format string"):
        build_task("dataset", seed=0, path=str(path), columns={"answer": "solution"}, template="Q: {}")
    with pytest.raises(TaskError, match="unknown answer extractor 'boxxed'"):
        build_task("dataset", seed=0, path=str(path), columns={"answer": "solution"}, extractor="boxxed")
    with pytest.raises(TaskError, match="does not exist; set option path"):
        build_task("dataset", seed=0, path=str(tmp_path / "nope.jsonl"))
    with pytest.raises(TaskError, match="option path is required"):
        build_task("dataset", seed=0)


def test_a_task_of_ones_own_by_import_path(tmp_path, monkeypatch):
    (tmp_path / "own_task_module.py").write_text(textwrap.dedent('''
        from grpo_lab.tasks import Example, VerifiableTask

        class Doubling(VerifiableTask):
            name = "doubling"
            alphabet = "0123456789*2="

            def __init__(self, *, seed, size=20):
                self._options = {"size": size}
                examples = [Example(f"{i}*2=", str(2 * i), str(2 * i)) for i in range(size)]
                self._train, self._eval = tuple(examples[4:]), tuple(examples[:4])

            def extract_answer(self, completion):
                return completion.strip() or None
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    task = build_task("own_task_module:Doubling", seed=0, size=10)
    assert len(task.train_examples()) == 6 and task.reward(task.eval_examples()[1], "2", True) == 1.0
    with pytest.raises(TaskError, match="unknown option.*'sise'"):
        build_task("own_task_module:Doubling", seed=0, sise=3)
    with pytest.raises(TaskError, match="cannot import no_such_tasks"):
        build_task("no_such_tasks:Thing", seed=0)
    with pytest.raises(TaskError, match="module own_task_module has no 'Tripling'"):
        build_task("own_task_module:Tripling", seed=0)
