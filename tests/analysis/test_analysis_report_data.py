"""write_report returns the analysis as data (a Report) and renders terminal tables with a
header row, so that callers need not scrape the README."""

import os
from pathlib import Path

import pandas as pd
import pytest

from grpo_lab.analysis import Report, format_arm_table, format_claims_table, report, text

FIVE = {"method=grpo": {0: 0.70, 1: 0.72, 2: 0.69, 3: 0.71, 4: 0.73},
        "method=rft": {0: 0.50, 1: 0.53, 2: 0.48, 3: 0.51, 4: 0.49}}
TWO = {"method=grpo": {0: 0.70, 1: 0.74}, "method=rft": {0: 0.60, 1: 0.62}}


def make_frame(finals, steps=2):
    return pd.DataFrame([
        {"run_id": f"{arm}-{seed}", "grid": "g", "arm": arm, "seed": seed, "step": step,
         "sft_hash": "s0", "config_hash": None, "eval/accuracy": final * step / steps,
         "param:seed": str(seed), "param:method": arm.split("=")[-1],
         "factor:method": arm.split("=")[-1]}
        for arm, per_seed in finals.items() for seed, final in per_seed.items()
        for step in range(1, steps + 1)])


CLAIMS = [report.Claim("GRPO beats RFT", "grpo", "rft"),
          report.Claim("RFT beats GRPO", "rft", "grpo")]


def write(tmp_path, finals, name="r"):
    return report.write_report(name, claims=CLAIMS, frame=make_frame(finals), out_dir=tmp_path,
                               tracking_uri="sqlite:///nowhere.db", n_resamples=200)


def test_write_report_returns_the_analysis_as_data(tmp_path):
    result = write(tmp_path, FIVE)
    assert isinstance(result, Report)
    assert result.path == tmp_path / "r" / "README.md" and result.path.exists()
    assert [(r.claim.text, r.verdict) for r in result.results] == [
        ("GRPO beats RFT", report.HOLDS), ("RFT beats GRPO", report.DOES_NOT_HOLD)]
    assert result.results[0].reason.startswith("claimed direction with adjusted p = ")
    arms = result.arms
    assert list(arms["arm"]) == ["method=grpo", "method=rft"]
    assert list(arms["seeds"]) == [5, 5] and arms["mean"].tolist() == pytest.approx([0.71, 0.502])
    assert list(arms["ci_method"]) == ["percentile", "percentile"]
    assert result.warning is None and result.analysis.few_seeds == {}
    assert sorted(p.name for p in result.plots) == ["curves_eval_accuracy.png",
                                                      "final_eval_accuracy.png"]
    assert all(p.exists() for p in result.plots)


def test_report_still_stands_in_for_the_readme_path(tmp_path):
    result = write(tmp_path, FIVE)
    readme = tmp_path / "r" / "README.md"
    assert result == readme and readme == result and result == str(readme)
    assert Path(result) == readme and os.fspath(result) == str(readme)
    assert str(result) == str(readme) and f"{result}" == str(readme)
    assert result.read_text() == readme.read_text() and "## Claims" in result.read_text()
    assert result.parent == tmp_path / "r" and result.name == "README.md"
    with open(result) as handle:
        assert handle.readline() == "# r\n"
    assert result != tmp_path / "other.md" and hash(result) == hash(readme)


def test_text_table_by_hand():
    assert text.text_table(["a", "bb"], [[1, "x"], [333, "long text"]]) == [
        "a    bb", "---  ---------", "1    x", "333  long text"]


def test_claims_table_has_a_header_row_and_aligned_columns(tmp_path):
    result = write(tmp_path, FIVE)
    lines = result.claims_table().splitlines()
    assert lines == format_claims_table(result.analysis).splitlines()
    header, rule, first, second = lines
    assert header.split()[:3] == ["#", "claim", "metric"]
    for column in ("difference [95% CI]", "p (Holm)", "P(better wins)", "verdict", "why"):
        assert column in header
    assert set(rule) == {"-", " "}
    verdict_at = header.index("verdict")
    assert first[verdict_at:].startswith("holds ")
    assert second[verdict_at:].startswith("does not hold ")
    assert first.startswith("1  GRPO beats RFT  eval/accuracy")
    cmp = result.results[0].comparison
    assert text.estimate_with_ci(cmp.difference) in first and "**" not in first


def test_claims_table_with_few_seeds_starts_with_the_warning(tmp_path):
    result = write(tmp_path, TWO)
    warning, header, rule, *rows = result.claims_table().splitlines()
    assert warning == result.warning
    assert warning.startswith("warning: too few seeds: fewer than 5 seeds in method=grpo "
                              "(2 seeds), method=rft (2 seeds).")
    assert header.startswith("#  claim") and len(rows) == 2
    assert all("(t)" in row and "not estimable" in row for row in rows)
    assert "too few seeds (2 per arm)" in rows[0]


def test_arm_table_for_the_terminal(tmp_path):
    result = write(tmp_path, TWO)
    header, rule, grpo, rft = result.arm_table().splitlines()
    assert header.split()[:5] == ["arm", "seeds", "mean", "sd", "IQM"]
    assert "95% CI of mean" in header and "95% CI of IQM" in header
    assert grpo.startswith("method=grpo  2      0.72") and grpo.endswith("(t)  not estimable")
    assert result.arm_table("eval/accuracy") == format_arm_table(result.analysis)


def test_rerunning_a_report_removes_only_its_stale_plots(tmp_path):
    at_step = [*CLAIMS, report.Claim("early", "grpo", "rft", step=1)]
    first = report.write_report("r", claims=at_step, frame=make_frame(FIVE), out_dir=tmp_path,
                                tracking_uri="sqlite:///nowhere.db", n_resamples=200)
    folder = tmp_path / "r"
    assert (folder / "final_eval_accuracy_step1.png").exists() and first.removed == ()
    others = [folder / name for name in ("notes.png", "pass_maj_at_k.png", "final_notes.txt",
                                         "my_final_eval.png", "curves_old.png.bak", "data.csv")]
    for path in others:
        path.write_text("kept")
    (folder / "final_folder.png").mkdir()  # a folder named like a plot is no plot
    (folder / "sub").mkdir()
    (folder / "sub" / "final_eval_accuracy_step1.png").write_text("kept")  # only the folder itself
    (folder / "curves_eval_len.png").write_text("stale")
    second = write(tmp_path, FIVE)  # no claim at step 1 any more
    assert sorted(p.name for p in second.removed) == [
        "curves_eval_len.png", "final_eval_accuracy_step1.png"]
    assert not (folder / "final_eval_accuracy_step1.png").exists()
    assert not (folder / "curves_eval_len.png").exists()
    assert all(path.read_text() == "kept" for path in others)
    assert (folder / "final_folder.png").is_dir()
    assert (folder / "sub" / "final_eval_accuracy_step1.png").exists()
    assert sorted(p.name for p in folder.glob("*.png")) == [
        "curves_eval_accuracy.png", "final_eval_accuracy.png", "final_folder.png",
        "my_final_eval.png", "notes.png", "pass_maj_at_k.png"]
    assert "final_eval_accuracy_step1.png" not in second.read_text()


def test_curves_false_removes_old_curves(tmp_path):
    write(tmp_path, FIVE)
    again = report.write_report("r", claims=CLAIMS, frame=make_frame(FIVE), out_dir=tmp_path,
                                tracking_uri="sqlite:///nowhere.db", n_resamples=200,
                                curves=False)
    assert [p.name for p in again.removed] == ["curves_eval_accuracy.png"]
    assert [p.name for p in again.plots] == ["final_eval_accuracy.png"]
    assert (tmp_path / "r" / "final_eval_accuracy.png").exists()


def test_remove_stale_plots_keeps_what_it_is_told_to(tmp_path):
    for name in ("final_a.png", "final_b.png", "curves_a.png", "final_a.PNG", "finals.png"):
        (tmp_path / name).write_text("x")
    removed = report.remove_stale_plots(tmp_path, keep=[tmp_path / "final_a.png"])
    assert [p.name for p in removed] == ["curves_a.png", "final_b.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final_a.PNG", "final_a.png",
                                                          "finals.png"]
