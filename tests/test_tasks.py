"""Tests of grpo_lab.tasks: hand-checked rewards, seeded and disjoint data, the GSM8K loader."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from grpo_lab.tasks import (
    TASKS,
    AdditionTask,
    ChainTask,
    Example,
    StepReward,
    Task,
    TaskError,
    build_task,
)
from grpo_lab.tasks.gsm8k import normalize_number

CHAIN_EXAMPLE = Example(prompt="4+5+7+0-1=", answer="15", target="9,16,16,15")


@pytest.fixture(scope="module")
def chain() -> ChainTask:
    return build_task("chain", seed=0, train_size=300, eval_size=50)


@pytest.fixture(scope="module")
def addition() -> AdditionTask:
    return build_task("addition", seed=0, train_size=300, eval_size=50)


# -- registry and options ----------------------------------------------------------------------


def test_registry_builds_every_task_as_the_protocol(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", gsm8k_rows(5))
    assert set(TASKS) >= {"addition", "chain", "gsm8k"}
    for name, options in [
        ("addition", {"train_size": 10, "eval_size": 5}),
        ("chain", {"train_size": 10, "eval_size": 5}),
        ("gsm8k", {"path": str(path), "eval_size": 1}),
    ]:
        task = build_task(name, seed=1, **options)
        assert isinstance(task, Task)
        assert task.name == name


def test_unknown_task_is_a_value_error_naming_the_known_tasks():
    with pytest.raises(ValueError, match="unknown task 'nope'.*addition, chain, gsm8k"):
        build_task("nope", seed=0)
    assert issubclass(TaskError, ValueError)


@pytest.mark.parametrize(
    "name, options, message",
    [
        ("chain", {"termz": 3}, "unknown option.*'termz'.*max_terms"),
        ("chain", {"min_terms": 4, "max_terms": 3}, "max_terms .3. must be >= min_terms .4."),
        ("chain", {"min_terms": 1}, "min_terms must be >= 2"),
        ("chain", {"nonnegative": "yes"}, "nonnegative must be true or false"),
        ("addition", {"digits": 0}, "digits must be >= 1"),
        ("addition", {"digits": 1.5}, "digits must be an integer"),
        ("addition", {"train_size": True}, "train_size must be an integer"),
    ],
)
def test_bad_options_raise_task_error(name, options, message):
    with pytest.raises(TaskError, match=message):
        build_task(name, seed=0, **options)


# -- addition ------------------------------------------------------------------------------------


def test_addition_rewards_by_hand(addition):
    example = Example(prompt="23+58=", answer="81", target="81")
    assert addition.reward(example, "81", finished=True) == 1.0
    assert addition.reward(example, "82", finished=True) == 0.0
    assert addition.reward(example, "81", finished=False) == 0.0  # no EOS, no reward
    assert addition.reward(example, "81,1", finished=True) == 0.0  # extra text
    assert addition.reward(example, "081", finished=True) == 0.0  # exact string match
    assert addition.reward(example, "", finished=True) == 0.0
    assert addition.is_correct(example, "81", finished=True)
    assert addition.extract_answer("81") == "81"
    assert addition.extract_answer("8+1") is None
    assert addition.step_rewards(example, "81", finished=True) is None


def test_addition_examples_are_sums_of_numbers_of_the_given_digits():
    task = build_task("addition", seed=3, digits=3, train_size=200, eval_size=20)
    for example in [*task.train_examples(), *task.eval_examples()]:
        left, right = example.prompt.removesuffix("=").split("+")
        assert 0 <= int(left) < 1000 and 0 <= int(right) < 1000
        assert example.answer == example.target == str(int(left) + int(right))
        assert task.reward(example, example.target, finished=True) == 1.0


def test_addition_default_sizes_fit_the_two_digit_space():
    task = build_task("addition", seed=0)
    assert len(task.eval_examples()) == 512
    assert len(task.train_examples()) == 100 * 100 - 512  # every other prompt
    assert_disjoint(task)


# -- chain ---------------------------------------------------------------------------------------


def test_chain_rewards_by_hand(chain):
    assert chain.reward(CHAIN_EXAMPLE, "9,16,16,15", finished=True) == 1.0
    assert chain.reward(CHAIN_EXAMPLE, "9,16,16,14", finished=True) == 0.0
    assert chain.reward(CHAIN_EXAMPLE, "9,16,16,15", finished=False) == 0.0
    assert chain.reward(CHAIN_EXAMPLE, "9,16,16,15,3", finished=True) == 0.0  # extra step
    assert chain.reward(CHAIN_EXAMPLE, "9,16,16,15=", finished=True) == 0.0  # extra text
    # Outcome reward reads only the final number.
    assert chain.reward(CHAIN_EXAMPLE, "1,2,15", finished=True) == 1.0
    assert chain.extract_answer("9,16,16,15") == "15"
    assert chain.extract_answer("9,16,") is None
    assert chain.extract_answer("") is None


def test_chain_step_rewards_by_hand(chain):
    # index:      012345678901
    completion = "9,17,16,15,3"
    assert chain.step_rewards(CHAIN_EXAMPLE, completion, finished=True) == [
        StepReward(end=0, reward=1.0),  # "9"
        StepReward(end=3, reward=0.0),  # "17" != 16
        StepReward(end=6, reward=1.0),  # "16"
        StepReward(end=9, reward=1.0),  # "15"
        StepReward(end=11, reward=0.0),  # "3": beyond the last step
    ]
    assert chain.step_rewards(CHAIN_EXAMPLE, "", finished=False) == []
    # An empty piece ends at the comma that closes it; a trailing one at the last character.
    assert chain.step_rewards(CHAIN_EXAMPLE, "9,,16,", finished=False) == [
        StepReward(end=0, reward=1.0),
        StepReward(end=2, reward=0.0),
        StepReward(end=4, reward=1.0),
        StepReward(end=5, reward=0.0),
    ]
    steps = chain.step_rewards(CHAIN_EXAMPLE, CHAIN_EXAMPLE.target, finished=True)
    assert [s.reward for s in steps] == [1.0] * 4
    assert steps[-1].end == len(CHAIN_EXAMPLE.target) - 1


def running_results(prompt: str) -> list[int]:
    """An independent computation of the chain target: evaluate every prefix with Python."""
    expression = prompt.removesuffix("=")
    cuts = [i for i, ch in enumerate(expression) if ch in "+-"] + [len(expression)]
    return [eval(expression[:cut]) for cut in cuts[1:]]


@pytest.mark.parametrize("nonnegative", [True, False])
def test_chain_targets_are_the_running_results(nonnegative):
    task = build_task(
        "chain", seed=5, min_terms=2, max_terms=6, digits=2, nonnegative=nonnegative,
        train_size=400, eval_size=40,
    )
    examples = [*task.train_examples(), *task.eval_examples()]
    for example in examples:
        results = running_results(example.prompt)
        assert example.target == ",".join(map(str, results))
        assert example.answer == str(results[-1])
        assert 2 <= len(results) + 1 <= 6
        assert all(0 <= int(n) < 100 for n in example.prompt[:-1].replace("-", "+").split("+"))
        assert task.reward(example, example.target, finished=True) == 1.0
        steps = task.step_rewards(example, example.target, finished=True)
        assert [s.reward for s in steps] == [1.0] * len(results)
    totals = [int(n) for e in examples for n in e.target.split(",")]
    if nonnegative:
        assert min(totals) >= 0
    else:
        assert min(totals) < 0


def test_chain_defaults():
    task = build_task("chain", seed=0)
    assert (len(task.train_examples()), len(task.eval_examples())) == (20000, 512)
    prompts = [e.prompt for e in task.train_examples()]
    terms = {p.count("+") + p.count("-") + 1 for p in prompts}
    assert terms == {3, 4, 5}
    assert max(len(p) for p in prompts) == len("1+2+3+4+5=")
    assert_disjoint(task)


# -- shared properties of the synthetic tasks ----------------------------------------------------


def assert_disjoint(task) -> None:
    train = [e.prompt for e in task.train_examples()]
    evaluation = [e.prompt for e in task.eval_examples()]
    assert len(set(train)) == len(train)
    assert len(set(evaluation)) == len(evaluation)
    assert not set(train) & set(evaluation)


@pytest.mark.parametrize("name", ["addition", "chain"])
def test_synthetic_sets_are_fixed_by_seed_and_disjoint(name):
    build = lambda seed, train_size=300: build_task(
        name, seed=seed, train_size=train_size, eval_size=60
    )
    first, again, other = build(7), build(7), build(8)
    assert list(first.train_examples()) == list(again.train_examples())
    assert list(first.eval_examples()) == list(again.eval_examples())
    assert list(first.train_examples()) != list(other.train_examples())
    assert list(first.eval_examples()) != list(other.eval_examples())
    assert (len(first.train_examples()), len(first.eval_examples())) == (300, 60)
    assert_disjoint(first)
    # The eval set does not depend on the size of the train set.
    assert list(build(7, train_size=500).eval_examples()) == list(first.eval_examples())


def test_synthetic_generation_uses_a_local_rng():
    import random

    random.seed(123)
    state = random.getstate()
    build_task("chain", seed=0, train_size=50, eval_size=5)
    build_task("addition", seed=0, train_size=50, eval_size=5)
    assert random.getstate() == state


def test_whole_space_can_be_taken_and_no_more():
    task = build_task("addition", seed=0, digits=1, train_size=90, eval_size=10)
    assert_disjoint(task)
    prompts = {e.prompt for e in [*task.train_examples(), *task.eval_examples()]}
    assert len(prompts) == 100
    with pytest.raises(TaskError, match="101 distinct prompts.*allow only 100"):
        build_task("addition", seed=0, digits=1, train_size=91, eval_size=10)
    # 2-term chains with the total kept >= 0: 100 sums and 55 differences.
    task = build_task("chain", seed=0, min_terms=2, max_terms=2, train_size=150, eval_size=5)
    assert len({e.prompt for e in task.train_examples()}) == 150
    with pytest.raises(TaskError, match="allow only 155"):
        build_task("chain", seed=0, min_terms=2, max_terms=2, train_size=151, eval_size=5)


@pytest.mark.parametrize("name", ["addition", "chain"])
def test_alphabet_covers_every_prompt_and_target(name):
    task = build_task(name, seed=2, train_size=500, eval_size=50, **(
        {"nonnegative": False} if name == "chain" else {}
    ))
    used = set()
    for example in [*task.train_examples(), *task.eval_examples()]:
        used |= set(example.prompt) | set(example.target) | set(example.answer)
    assert used <= set(task.alphabet)
    assert len(set(task.alphabet)) == len(task.alphabet)


# -- gsm8k ---------------------------------------------------------------------------------------


def gsm8k_rows(count: int, start: int = 0) -> list[dict]:
    return [
        {
            "question": f"Question number {i}: Ann has {i} apples and buys 1,000 more. How many?",
            "answer": f"She has {i} + 1000 = <<{i}+1000={i + 1000}>>{i + 1000} apples.\n"
            f"#### {i + 1000:,}",
        }
        for i in range(start, start + count)
    ]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_gsm8k_loads_train_and_test_files_from_a_directory(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", gsm8k_rows(8))
    write_jsonl(tmp_path / "test.jsonl", gsm8k_rows(3, start=100))
    task = build_task("gsm8k", seed=0, path=str(tmp_path))
    assert (len(task.train_examples()), len(task.eval_examples())) == (8, 3)
    example = task.train_examples()[2]
    assert example.prompt == (
        "Question: Question number 2: Ann has 2 apples and buys 1,000 more. How many?\nAnswer:"
    )
    assert example.answer == "1002"  # thousands comma removed
    assert example.target == (
        " She has 2 + 1000 = <<2+1000=1002>>1002 apples.\nThe answer is 1002"
    )
    assert task.extract_answer(example.target) == "1002"
    assert task.reward(example, example.target, finished=True) == 1.0
    assert task.reward(example, example.target, finished=False) == 0.0
    assert task.reward(example, " So 1001.\nThe answer is 1001", finished=True) == 0.0
    assert task.reward(example, " 1,002 apples #### 1,002\n\nQuestion: 7", finished=True) == 1.0
    assert task.step_rewards(example, example.target, finished=True) is None
    assert task.eval_examples()[0].answer == "1100"


def test_gsm8k_extract_answer(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", gsm8k_rows(3))
    extract = build_task("gsm8k", seed=0, path=str(path), eval_size=1).extract_answer
    assert extract("blah #### 12\n#### 1,234.50 dollars") == "1234.5"
    assert extract("It costs $7.00. The answer is 18. Then 3 more.") == "18"
    assert extract("2 and 3, then 5-4 gives 1.") == "1"
    assert extract("it is -3") == "-3"
    assert extract("no number here") is None
    assert extract("#### none") is None
    assert normalize_number(" 1,000 ") == "1000"
    assert normalize_number("007") == "7"
    assert normalize_number("abc") is None


def test_gsm8k_loads_parquet_in_the_hub_layout(tmp_path):
    (tmp_path / "main").mkdir()
    pd.DataFrame(gsm8k_rows(6)).to_parquet(tmp_path / "main" / "train-00000-of-00001.parquet")
    pd.DataFrame(gsm8k_rows(2, start=50)).to_parquet(
        tmp_path / "main" / "test-00000-of-00001.parquet"
    )
    task = build_task("gsm8k", seed=0, path=str(tmp_path), eval_size=1, train_size=4)
    assert (len(task.train_examples()), len(task.eval_examples())) == (4, 1)
    assert task.eval_examples()[0].answer in {"1050", "1051"}


def test_gsm8k_name_in_local_hub_cache(tmp_path):
    commit = "0" * 40
    repo = tmp_path / "datasets--acme--gsm8k"
    snapshot = repo / "snapshots" / commit / "main"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    pd.DataFrame(gsm8k_rows(5)).to_parquet(snapshot / "train-00000-of-00001.parquet")
    pd.DataFrame(gsm8k_rows(2, start=9)).to_parquet(snapshot / "test-00000-of-00001.parquet")
    task = build_task("gsm8k", seed=0, path="acme/gsm8k", cache_dir=str(tmp_path))
    assert (len(task.train_examples()), len(task.eval_examples())) == (5, 2)


def test_gsm8k_single_file_is_split_disjointly_by_seed(tmp_path):
    rows = gsm8k_rows(40)
    rows.append(dict(rows[0]))  # a duplicate question must not leak into both sets
    path = write_jsonl(tmp_path / "all.jsonl", rows)
    build = lambda seed: build_task("gsm8k", seed=seed, path=str(path), eval_size=10)
    first, again, other = build(0), build(0), build(1)
    assert len(first.eval_examples()) == 10
    assert list(first.train_examples()) == list(again.train_examples())
    assert list(first.eval_examples()) == list(again.eval_examples())
    assert list(first.eval_examples()) != list(other.eval_examples())
    for task in (first, other):
        train = {e.prompt for e in task.train_examples()}
        assert not train & {e.prompt for e in task.eval_examples()}
        assert len(train) + len(task.eval_examples()) == 40
    default = build_task("gsm8k", seed=0, path=str(path))
    assert len(default.eval_examples()) == 4  # 10% of the rows
    with pytest.raises(TaskError, match="eval_size 41 leaves no training rows"):
        build_task("gsm8k", seed=0, path=str(path), eval_size=41)


def test_gsm8k_json_list_file(tmp_path):
    path = tmp_path / "data.json"
    path.write_text(json.dumps(gsm8k_rows(5)), encoding="utf-8")
    task = build_task("gsm8k", seed=0, path=str(path), eval_size=2)
    assert (len(task.train_examples()), len(task.eval_examples())) == (3, 2)


def test_gsm8k_text_is_mapped_onto_the_alphabet(tmp_path):
    question = "Jos\u00e9\u2019s caf\u00e9\tsells 3\u00d74 \u201cbuns\u201d \u2014 how many?"
    rows = [{"question": question, "answer": "3\u00d74 = 12 \u2014 \u263a\n#### 12"}]
    rows += gsm8k_rows(3)
    task = build_task("gsm8k", seed=0, path=str(write_jsonl(tmp_path / "x.jsonl", rows)),
                      eval_size=1)
    examples = [*task.train_examples(), *task.eval_examples()]
    cafe = next(e for e in examples if e.answer == "12")
    assert cafe.prompt == 'Question: Jose\'s cafe sells 3*4 "buns" - how many?\nAnswer:'
    assert cafe.target == " 3*4 = 12 - ?\nThe answer is 12"
    for example in examples:
        assert set(example.prompt + example.target) <= set(task.alphabet)


@pytest.mark.parametrize(
    "bad_row, message",
    [
        (
            {"question": "How many?", "answer": "It is 5."},
            "has no '####' final answer; each answer must end with '#### <number>'",
        ),
        ({"answer": "#### 5"}, "has no 'question' field"),
        (
            {"question": "How many?", "answer": "#### five"},
            "'five' after '####', which is not a number",
        ),
    ],
)
def test_gsm8k_malformed_row_names_file_and_row(tmp_path, bad_row, message):
    rows = gsm8k_rows(4)
    rows.insert(2, bad_row)
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    with pytest.raises(TaskError, match=f"row 3 of {path}.*") as caught:
        build_task("gsm8k", seed=0, path=str(path), eval_size=1)
    assert message in str(caught.value)


def test_gsm8k_missing_path_and_uncached_name(tmp_path):
    missing = tmp_path / "nope" / "train.jsonl"
    with pytest.raises(TaskError, match="does not exist; set option path to a GSM8K-format"):
        build_task("gsm8k", seed=0, path=str(missing))
    with pytest.raises(TaskError, match="no dataset of that name is in the local Hugging Face"):
        build_task("gsm8k", seed=0, path="nobody/no-such-dataset", cache_dir=str(tmp_path))
    with pytest.raises(TaskError, match="holds no 'train' or 'test' files"):
        build_task("gsm8k", seed=0, path=str(tmp_path))
    with pytest.raises(TaskError, match="option path is required"):
        build_task("gsm8k", seed=0)
