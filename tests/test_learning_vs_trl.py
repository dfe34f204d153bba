"""analysis/learning_vs_trl.py without TRL: the clock, the curves, the time to reach a target, the report."""

import json

import pytest

from test_bench import _analysis_script


@pytest.fixture(scope="module")
def lvt():
    return _analysis_script("learning_vs_trl")


def test_first_reach_interpolates_between_evaluations(lvt):
    curve = [{"step": 0, "rl_wall_s": 0.0, "accuracy": 0.5}, {"step": 10, "rl_wall_s": 4.0, "accuracy": 0.7},
             {"step": 20, "rl_wall_s": 8.0, "accuracy": 0.9}]
    assert lvt.first_reach(curve, 0.6) == pytest.approx(2.0)
    assert lvt.first_reach(curve, 0.8, x="step") == pytest.approx(15.0)
    assert lvt.first_reach(curve, 0.5) == 0.0
    assert lvt.first_reach(curve, 0.95) is None


def test_the_mean_curve_keeps_only_steps_every_seed_reached(lvt):
    rows = [{"side": "trl", "seed": s, "step": step, "rl_wall_s": step * (1 + s), "accuracy": 0.5 + step / 100}
            for s in (0, 1) for step in (0, 10)] + [{"side": "trl", "seed": 0, "step": 20, "rl_wall_s": 20,
                                                     "accuracy": 0.9}]
    curve = lvt.mean_curve(rows, "trl")
    assert [c["step"] for c in curve] == [0, 10]
    assert curve[1]["rl_wall_s"] == pytest.approx(15.0)


def test_the_clock_stands_still_while_it_is_paused(lvt):
    import time

    clock = lvt.RLClock()
    clock.start()
    time.sleep(0.02)
    clock.pause()
    paused_at = clock.read()[0]
    time.sleep(0.05)
    assert clock.read()[0] == paused_at
    clock.resume()
    time.sleep(0.01)
    assert paused_at < clock.read()[0] < paused_at + 0.05


def _write_lines(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_the_report_gives_the_time_each_side_takes_to_reach_trls_final_accuracy(lvt, tmp_path):
    curves, runs = [], []
    for seed in (0, 1):  # grpo-lab: 1 s per step; TRL: 4 s per step, the same accuracy per step
        for side, per_step in (("grpo_lab", 1.0), ("trl", 4.0)):
            curves += [{"side": side, "seed": seed, "step": step, "rl_wall_s": step * per_step,
                        "accuracy": 0.5 + 0.02 * step} for step in (0, 5, 10)]
            phases = ({"gen_s": 4.0, "logprob_s": 0.1, "update_s": 5.0, "loop_s": 0.9} if side == "grpo_lab" else
                      {"prepare_s": 15.0, "gen_s": 12.0, "reward_s": 1.0, "loss_forward_s": 5.0,
                       "backward_optim_loop_s": 10.0})
            runs.append({"side": side, "seed": seed, "precision": "bf16-mixed", "steps": 10,
                         "rl_wall_s": 10 * per_step, "step_ends": [per_step * (i + 1) for i in range(10)],
                         "phases": phases, "versions": {"torch": "x"}})
    _write_lines(tmp_path / "curves.jsonl", curves)
    _write_lines(tmp_path / "runs.jsonl", runs)
    text = lvt.write_report(tmp_path)
    assert "TRL's final accuracy: **0.7000**" in text
    assert "| RL wall time to first reach it, mean curve (s) | 10.0 | 40.0 |" in text
    assert "**0.250** (4.00x faster): meets the goal" in text
    assert (tmp_path / "README.md").read_text() == text


def test_the_report_says_when_grpo_lab_never_reaches_it(lvt, tmp_path):
    curves = [{"side": side, "seed": 0, "step": step, "rl_wall_s": float(step), "accuracy": acc}
              for side, accs in (("grpo_lab", (0.5, 0.6)), ("trl", (0.5, 0.8))) for step, acc in zip((0, 10), accs)]
    runs = [{"side": side, "seed": 0, "precision": "fp32", "steps": 10, "rl_wall_s": 10.0,
             "step_ends": [float(i + 1) for i in range(10)], "phases": {}, "versions": {}} for side in ("grpo_lab", "trl")]
    _write_lines(tmp_path / "curves.jsonl", curves)
    _write_lines(tmp_path / "runs.jsonl", runs)
    assert "does not reach TRL's final accuracy within 10 steps" in lvt.write_report(tmp_path)


def test_the_grpo_lab_side_records_a_curve_with_evaluation_outside_its_clock(lvt, tiny_config):
    config = tiny_config(**{"train.steps": 3, "train.eval_every": 2})
    lvt.warm_worker(config)
    record = lvt.grpo_lab_worker(config, seed=0, precision="fp32", threads=1, evaluate=True)
    assert [row["step"] for row in record["curve"]] == [0, 2, 3]
    assert record["steps"] == 3 and len(record["step_ends"]) == 3
    walls = [row["rl_wall_s"] for row in record["curve"]]
    assert walls == sorted(walls) and walls[-1] <= record["rl_wall_s"]
    assert all(0 <= row["accuracy"] <= 1 and row["eval_s"] > 0 for row in record["curve"])
    # the run's own timed steps fit inside its clock; the evaluations' seconds do not count
    assert record["phases"]["step_s"] <= record["rl_wall_s"] + 1e-6
