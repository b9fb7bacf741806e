"""The examples that the documentation quotes print what the documentation says."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_choosing_rule_and_reference_example_matches_the_docs(capsys):
    runpy.run_path(str(ROOT / "examples" / "choosing_rule_and_reference.py"), run_name="__main__")
    printed = capsys.readouterr().out
    page = (ROOT / "docs" / "choosing-a-rule-and-a-reference.md").read_text()
    for line in printed.strip().splitlines():
        if line.strip():
            assert line.rstrip() in page, f"docs do not show: {line!r}"
    assert "reveal_cancel  [0.5, 0.5]" in printed and "rescale        [0.0, 1.0]" in printed


def test_example_functions_are_exact():
    module = runpy.run_path(str(ROOT / "examples" / "choosing_rule_and_reference.py"))
    rules = module["rules_example"]()
    assert rules == {
        "rescale": pytest.approx([0.0, 1.0], abs=1e-15),
        "reveal_cancel": pytest.approx([0.5, 0.5], abs=1e-15),
    }
    assert module["reference_example"]() == {
        "(0, 0)": pytest.approx([0.5, 0.5], abs=1e-15),
        "(1, 0)": pytest.approx([0.0, 1.0], abs=1e-15),
    }
