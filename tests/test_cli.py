"""The ``deltalift`` command line: demo and explain in-process, error paths, and the entry points."""

from __future__ import annotations

import platform
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from deltalift import DeepLift
from deltalift.cli import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def image_model() -> nn.Module:
    """A small CNN for (N, 1, 8, 8) images with 5 classes (built only from torch modules, so it unpickles anywhere)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 8),
        nn.ReLU(),
        nn.Linear(8, 5),
    ).eval()


@pytest.fixture
def saved(tmp_path: Path) -> tuple[nn.Module, torch.Tensor, Path, Path]:
    """A model saved with torch.save(model) and an inputs .npy file written by the test."""
    model = image_model()
    inputs = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    model_path, inputs_path = tmp_path / "model.pt", tmp_path / "x.npy"
    torch.save(model, model_path)
    np.save(inputs_path, inputs.numpy())
    return model, inputs, model_path, inputs_path


def explain(model_path: Path, inputs_path: Path, out: Path, *extra: str) -> int:
    return main(["explain", "--model", str(model_path), "--inputs", str(inputs_path), "--out", str(out), *extra])


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    assert lines[0].startswith("deltalift: error: ")
    return lines[0]


# --- explain --------------------------------------------------------------------------------


def test_explain_matches_deeplift(saved: tuple, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, inputs, model_path, inputs_path = saved
    out = tmp_path / "out"
    assert explain(model_path, inputs_path, out, "--no-progress") == EXIT_OK

    attributions = np.load(out / "attributions.npy")
    targets = np.load(out / "targets.npy")
    deltas = np.load(out / "deltas.npy")
    assert attributions.shape == tuple(inputs.shape) and attributions.dtype == np.float32
    predicted = model(inputs).argmax(1)
    assert targets.tolist() == predicted.tolist()  # default target: the predicted class
    expected = DeepLift(model).attribute(inputs, baselines=0.0, target=predicted)
    np.testing.assert_allclose(attributions, expected.numpy(), rtol=1e-6, atol=1e-7)
    # summation-to-delta: the attributions add up to t(x) - t(0)
    with torch.no_grad():
        gap = (model(inputs) - model(torch.zeros_like(inputs))).gather(1, predicted[:, None])[:, 0]
    np.testing.assert_allclose(attributions.reshape(5, -1).sum(1), gap.numpy(), rtol=1e-4, atol=1e-5)
    assert np.abs(deltas).max() < 1e-4
    assert (out / "attributions.png").read_bytes()[:8] == PNG_SIGNATURE
    assert "max |convergence delta|" in capsys.readouterr().out


def test_explain_target_baseline_and_batches(saved: tuple, tmp_path: Path) -> None:
    model, inputs, model_path, inputs_path = saved
    out = tmp_path / "out"
    assert explain(model_path, inputs_path, out, "--target", "3", "--baseline", "mean", "--batch-size", "2") == EXIT_OK
    expected = DeepLift(model).attribute(inputs, baselines=inputs.mean(0, keepdim=True), target=3)
    np.testing.assert_allclose(np.load(out / "attributions.npy"), expected.numpy(), rtol=1e-5, atol=1e-6)
    assert np.load(out / "targets.npy").tolist() == [3] * 5


def test_explain_pt_inputs_number_baseline_and_non_images(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 1)).eval()
    inputs = torch.randn(3, 6, dtype=torch.float64)  # converted to the model's float32
    torch.save(model, tmp_path / "mlp.pt")
    torch.save(inputs, tmp_path / "x.pt")
    out = tmp_path / "out"
    assert explain(tmp_path / "mlp.pt", tmp_path / "x.pt", out, "--baseline", "0.5") == EXIT_OK
    expected = DeepLift(model).attribute(inputs.float(), baselines=0.5)
    np.testing.assert_allclose(np.load(out / "attributions.npy"), expected.numpy(), rtol=1e-5, atol=1e-6)
    assert not (out / "targets.npy").exists()  # one output: nothing to choose
    assert not (out / "attributions.png").exists()  # not images


# --- errors ---------------------------------------------------------------------------------


def test_missing_files(saved: tuple, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, _, model_path, inputs_path = saved
    assert explain(tmp_path / "nope.pt", inputs_path, tmp_path / "out") == EXIT_ERROR
    assert "model file not found: " in one_error_line(capsys.readouterr().err)
    assert explain(model_path, tmp_path / "nope.npy", tmp_path / "out") == EXIT_ERROR
    assert "inputs file not found: " in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("target", ["5", "-1"])
def test_bad_target(saved: tuple, tmp_path: Path, capsys: pytest.CaptureFixture[str], target: str) -> None:
    _, _, model_path, inputs_path = saved
    assert explain(model_path, inputs_path, tmp_path / "out", "--target", target) == EXIT_ERROR
    line = one_error_line(capsys.readouterr().err)
    assert f"--target {target} is out of range: the model has 5 outputs (0..4)" in line


def test_unusable_files(saved: tuple, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, _, model_path, inputs_path = saved
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    assert explain(tmp_path / "weights.pt", inputs_path, tmp_path / "out") == EXIT_ERROR
    assert "holds a dict (a state_dict or checkpoint), not a model" in one_error_line(capsys.readouterr().err)

    (tmp_path / "x.csv").write_text("1,2,3\n")
    assert explain(model_path, tmp_path / "x.csv", tmp_path / "out") == EXIT_ERROR
    assert "inputs must be a .npy or .pt file" in one_error_line(capsys.readouterr().err)

    np.save(tmp_path / "wrong.npy", np.zeros((2, 3), dtype=np.float32))
    assert explain(model_path, tmp_path / "wrong.npy", tmp_path / "out") == EXIT_ERROR
    assert "the model fails on inputs of shape (2, 3)" in one_error_line(capsys.readouterr().err)

    assert explain(model_path, inputs_path, tmp_path / "out", "--baseline", "blurry") == EXIT_ERROR
    assert "--baseline must be 'zero', 'mean'" in one_error_line(capsys.readouterr().err)


def test_torchscript_is_refused(saved: tuple, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, inputs, _, inputs_path = saved
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(model, inputs), tmp_path / "scripted.pt")
    assert explain(tmp_path / "scripted.pt", inputs_path, tmp_path / "out") == EXIT_ERROR
    assert "is a TorchScript archive" in one_error_line(capsys.readouterr().err)


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["explain", "--inputs", "x.npy"], ["demo", "--epochs", "0"], ["frobnicate"], []):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == EXIT_USAGE
    assert "must be at least 1, got 0" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_the_traceback(tmp_path: Path, where: str) -> None:
    argv = ["explain", "--model", str(tmp_path / "nope.pt"), "--inputs", "x.npy"]
    with pytest.raises(ValueError, match="model file not found"):
        main(["--debug", *argv] if where == "before" else [*argv, "--debug"])


def test_interrupt_and_warnings(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import deltalift.demo
    import deltalift.explain_files

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(deltalift.demo, "run_demo", interrupted)
    assert main(["demo"]) == EXIT_INTERRUPTED
    assert "deltalift: interrupted" in capsys.readouterr().err

    def warns(*args: object, **kwargs: object) -> None:
        warnings.warn("summation-to-delta fails\nfor example 0", UserWarning, stacklevel=1)
        raise ValueError("stop")

    monkeypatch.setattr(deltalift.explain_files, "explain_saved_model", warns)
    assert main(["explain", "--model", "m.pt", "--inputs", "x.npy"]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert "deltalift: warning: summation-to-delta fails for example 0" in err
    assert "deltalift: error: stop" in err


# --- demo and entry points ------------------------------------------------------------------


def test_demo_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--epochs", "2", "--examples", "3", "--seed", "1", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    figure = out / "digits_deeplift.png"
    assert f"wrote {figure}" in printed
    assert figure.read_bytes()[:8] == PNG_SIGNATURE
    accuracy = float(printed.split("test accuracy ")[1].split("%")[0]) / 100
    assert accuracy > 0.8
    # the demo's model and digits feed `deltalift explain` directly
    assert explain(out / "digits_cnn.pt", out / "digits_examples.npy", out / "explain", "--no-progress") == EXIT_OK
    assert np.load(out / "explain" / "attributions.npy").shape == (3, 1, 8, 8)


def test_console_script_help() -> None:
    script = Path(sys.executable).with_name("deltalift")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "deltalift"]
    done = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    assert "demo" in done.stdout and "explain" in done.stdout and done.stdout.startswith("usage: deltalift")


def test_python_m_error_exit_code(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "deltalift", "explain", "--model", str(tmp_path / "none.pt"), "--inputs", "x.npy"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == EXIT_ERROR
    assert one_error_line(done.stderr) == f"deltalift: error: model file not found: {tmp_path / 'none.pt'}"


def test_the_program_keeps_freed_memory_and_a_caller_of_main_decides_for_itself(monkeypatch, capsys):
    import deltalift.cli

    calls: list[bool] = []
    monkeypatch.setattr(deltalift.cli, "keep_freed_memory", lambda: calls.append(True) or True)
    with pytest.raises(SystemExit):
        main(["--version"])
    assert calls == []
    monkeypatch.setattr(sys, "argv", ["deltalift", "--version"])
    with pytest.raises(SystemExit):
        main()
    assert calls == [True]
    capsys.readouterr()


def test_keep_freed_memory_applies_on_glibc_and_says_so_elsewhere():
    from deltalift.runtime import keep_freed_memory

    applied = keep_freed_memory()
    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert applied is glibc
    assert keep_freed_memory() is applied  # idempotent
