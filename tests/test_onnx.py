"""ONNX models in ``deltalift explain``: a CNN exported with ``torch.onnx.export`` and explained from
the ``.onnx`` file (converted with onnx2torch) gives the original module's attributions; what
cannot be converted is refused with a message that names it."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from deltalift import DeepLift, IntegratedGradients
from deltalift.cli import EXIT_ERROR, EXIT_OK, main
from deltalift.files import InputFileError, load_model
from deltalift.methods.lrp import LRP

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnx2torch")

#: float32 throughout; the converted graph runs the same operations in the same order, so the
#: attributions agree to float32 rounding (observed ~1e-9; bound 1e-5 relative, 1e-6 absolute).
RTOL, ATOL = 1e-5, 1e-6


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 3),
    ).eval()


def export(model: nn.Module, example: torch.Tensor, path: Path) -> Path:
    """``torch.onnx.export`` with the TorchScript-based exporter (what onnx2torch reads), a dynamic batch."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
        )
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, torch.Tensor, Path]:
    folder = tmp_path_factory.mktemp("onnx")
    model = small_cnn()
    with torch.no_grad():  # non-trivial batch-norm statistics
        model[4].running_mean.uniform_(-0.5, 0.5)
        model[4].running_var.uniform_(0.5, 2.0)
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    return model, x, export(model, x[:1], folder / "cnn.onnx")


def test_onnx_round_trip_gives_the_original_attributions(exported: tuple, tmp_path: Path) -> None:
    model, x, path = exported
    np.save(tmp_path / "x.npy", x.numpy())
    out = tmp_path / "out"
    argv = ["explain", "--model", str(path), "--inputs", str(tmp_path / "x.npy"), "--out", str(out)]
    assert main([*argv, "--method", "deeplift,ig,lrp-epsilon", "--no-progress", "--batch-size", "3"]) == EXIT_OK
    predicted = model(x).argmax(1)
    assert np.load(out / "targets.npy").tolist() == predicted.tolist()
    expected = {
        "deeplift": DeepLift(model).attribute(x, baselines=0.0, target=predicted),
        "ig": IntegratedGradients(model).attribute(x, baselines=0.0, target=predicted, n_steps=50),
        "lrp-epsilon": LRP(model).attribute(x, target=predicted),
    }
    for name, values in expected.items():
        np.testing.assert_allclose(np.load(out / f"attributions-{name}.npy"), values.numpy(), rtol=RTOL, atol=ATOL)
    assert np.abs(np.load(out / "deltas-deeplift.npy")).max() < 1e-5


def test_loaded_onnx_model_computes_the_same_outputs(exported: tuple) -> None:
    model, x, path = exported
    converted = load_model(path)
    assert not converted.training
    with torch.no_grad():
        torch.testing.assert_close(converted(x), model(x), rtol=RTOL, atol=ATOL)


def test_unconvertible_and_invalid_onnx_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Unique", ["x"], ["y"])],
        "unique",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "unique.onnx"))
    with pytest.raises(InputFileError, match=r"onnx2torch cannot convert .*unique.onnx: .*Unique.*opsets: ai.onnx 17"):
        load_model(tmp_path / "unique.onnx")
    np.save(tmp_path / "x.npy", np.zeros((1, 2), dtype=np.float32))
    argv = ["explain", "--model", str(tmp_path / "unique.onnx"), "--inputs", str(tmp_path / "x.npy")]
    assert main([*argv, "--out", str(tmp_path / "out")]) == EXIT_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "dynamo=False, opset_version=17" in err[0]

    (tmp_path / "junk.onnx").write_bytes(b"\x00not a protobuf model")
    with pytest.raises(InputFileError, match="junk.onnx is not a valid ONNX model"):
        load_model(tmp_path / "junk.onnx")


def test_missing_onnx2torch_names_the_extra(exported: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    _, _, path = exported
    monkeypatch.setitem(sys.modules, "onnx2torch", None)  # import fails
    with pytest.raises(ImportError, match=r"pip install 'deltalift\[onnx\]'"):
        load_model(path)
