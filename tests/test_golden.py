"""Golden runs: every method and main switch computes what it computed when its fixture was recorded
(tests/golden/scenarios.py), from the stored warm start: the same sampled tokens, every recorded metric
of every step within 1e-6, and the same final weights, bit for bit on the platform the fixtures were
recorded on; on another CPU or torch, where float sums round differently, metrics and weight sums
within 2e-5 (measured across CPU kernels: a few 1e-6). The warm start's own training is pinned
separately (`test_golden_warm_start`)."""

from __future__ import annotations

import json
import math

import pytest

from golden.scenarios import HERE, SCENARIOS, fixture_path, run_scenario, warm_start_record

CROSS_PLATFORM = 2e-5  # relative and absolute tolerance where the fixture's platform is not this one


@pytest.fixture(scope="module")
def sft_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("golden_sft")


def close(a: float, b: float, tolerance: float = 1e-6) -> bool:
    return math.isclose(a, b, rel_tol=tolerance, abs_tol=tolerance)


def test_golden_warm_start(tmp_path):
    expected = json.loads((HERE / "warm_start.json").read_text())
    got = warm_start_record(tmp_path)
    assert got["sft_hash"] == expected["sft_hash"], "the warm start's identity (sft hash) changed"
    if got["platform"] == expected["platform"]:
        assert got["weights"] == expected["weights"], "the warm start's weights differ"
    for key in ("sum", "sum_sq", "sum_abs"):
        assert close(got[key], expected[key]), f"the warm start's weight {key} differs"


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_golden_run(name, tmp_path, sft_dir):
    expected = json.loads(fixture_path(name).read_text())
    got = run_scenario(name, tmp_path, sft_dir)
    tolerance = 1e-6 if got["platform"] == expected["platform"] else CROSS_PLATFORM
    assert got["config_hash"] == expected["config_hash"], "the run's identity (config hash) changed"
    assert got["sft_hash"] == expected["sft_hash"], "the warm start's identity (sft hash) changed"
    assert got["tokens"] == expected["tokens"], "the sampler drew other tokens"
    assert [row["step"] for row in got["history"]] == [row["step"] for row in expected["history"]]
    for want, have in zip(expected["history"], got["history"]):
        missing = sorted(set(want) - set(have))
        assert not missing, f"step {want['step']}: metrics no longer logged: {missing}"
        wrong = {k: (v, have[k]) for k, v in want.items() if not close(v, have[k], tolerance)}
        assert not wrong, f"step {want['step']}: recorded vs now {wrong}"
    for model in ("policy", "critic"):
        if model not in expected["weights"]:
            continue
        if got["platform"] == expected["platform"]:
            assert got["weights"][model] == expected["weights"][model], f"the final {model} weights differ"
        else:  # another CPU or torch: float sums may round differently
            assert close(got["weights"][model + "_sum"], expected["weights"][model + "_sum"], tolerance)
