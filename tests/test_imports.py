"""Import paths (package.module:name): a name the module lacks gets the closest one it has."""

from __future__ import annotations

import pytest

from grpo_lab.imports import resolve_import


@pytest.fixture
def module(tmp_path, monkeypatch):
    (tmp_path / "myrewards_mod.py").write_text(
        "def valid_reminder(example, completion, finished):\n    return 1.0\n\n"
        "def _private_helper():\n    pass\n\n"
        "class Scores:\n    def brevity(self):\n        return 0.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "myrewards_mod"


@pytest.mark.parametrize("path, message", [
    ("myrewards_mod:valid_remaindr",
     "reward function 'myrewards_mod:valid_remaindr': module myrewards_mod has no 'valid_remaindr'; "
     "did you mean 'valid_reminder'?"),
    ("myrewards_mod:Scores.brevty", "object myrewards_mod.Scores has no 'brevty'; did you mean 'brevity'?"),
    ("myrewards_mod:private_helper", "module myrewards_mod has no 'private_helper'"),  # no private names offered
    ("myrewards_mod:something_else", "module myrewards_mod has no 'something_else'"),
])
def test_a_typo_in_an_import_path_gets_the_closest_name(module, path, message):
    with pytest.raises(ValueError) as caught:
        resolve_import(path, what="reward function")
    assert str(caught.value).startswith(message) or message in str(caught.value)
    if "did you mean" not in message:
        assert "did you mean" not in str(caught.value)
    assert resolve_import("myrewards_mod:valid_reminder", what="reward function").__name__ == "valid_reminder"
