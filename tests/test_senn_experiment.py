"""The senn experiment at a small scale: one run on a subset of the digits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

from deltalift.experiments import senn as experiment  # noqa: E402
from deltalift.experiments.report import run_experiment  # noqa: E402
from deltalift.senn import METHODS  # noqa: E402


def test_a_small_run_writes_accuracy_figures_and_the_stability_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deltalift.demo import DigitsData, load_digits_data

    full = load_digits_data(0)

    def subset(seed: int) -> DigitsData:
        return DigitsData(
            full.train_images[:128], full.train_labels[:128], full.test_images[:32], full.test_labels[:32]
        )

    monkeypatch.setattr(experiment, "load_digits_data", subset)
    monkeypatch.setitem(experiment.SETTINGS, True, (1, 2, 2, 0))
    compared = ("SENN", "InputXGradient", "Occlusion")  # DeepLift and the others: tests/test_lipschitz.py
    monkeypatch.setattr(experiment, "STABILITY_METHODS", compared)
    report = run_experiment("senn", tmp_path, quick=True, seed=0, show_progress=False).read_text()
    results = json.loads((tmp_path / "results.json").read_text())
    for name in ("autoencoder", "identity"):
        assert 0.0 <= results[name]["test_accuracy"] <= 1.0
        stability = results[name]["stability"]
        assert set(stability) == {*compared, experiment.SENN_INPUT}
        assert all(v["max"] >= v["mean"] >= 0 for v in stability.values())
        assert (tmp_path / f"concepts-senn-{name}-explanations.png").exists()
    # pixels as concepts: h is the identity, so both of SENN's denominators are ||x - x'||
    identity = results["identity"]["stability"]
    assert identity["SENN"] == pytest.approx(identity[experiment.SENN_INPUT], rel=1e-6)
    # ...and its relevances move less than gradient x input even after one epoch on 128 digits
    # (robustness weight 0.1; measured 0.10 against 0.17).  Not asserted for the autoencoder SENN:
    # per unit of concept change (eq. 5) its relevances move more than gradient x input per unit of
    # input change at these settings (0.70 against 0.015; 3.9 against 1.1 at --quick).
    assert identity["SENN"]["mean"] < 0.8 * identity["InputXGradient"]["mean"]
    assert results["autoencoder"]["stability"]["SENN"] != results["autoencoder"]["stability"][experiment.SENN_INPUT]
    assert (tmp_path / "concepts-senn-prototypes.png").exists() and (tmp_path / "concepts-senn-stability.png").exists()
    for method in METHODS:
        assert (f"| {method} |" in report) == (method in compared)
    assert "trade_off" not in results  # the trade-off is part of the full run only
