"""``deltalift explain --method`` and ``deltalift.explain``: every method of the catalog on the same
inputs, reference and targets, checked against the classes called directly and by hand; the files
written for several methods; FASTA inputs; the errors."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import deltalift
from deltalift import (
    Deconvolution,
    DeepLift,
    DeepLiftShap,
    GradientShap,
    GuidedBackprop,
    GuidedGradCam,
    InputXGradient,
    IntegratedGradients,
    LayerGradCam,
    NoiseTunnel,
    Occlusion,
    Saliency,
)
from deltalift.cli import EXIT_ERROR, EXIT_OK, build_parser, main
from deltalift.explain_files import array_names, preprocess_from_args
from deltalift.images import IMAGENET_MEAN, IMAGENET_STD, Preprocess
from deltalift.method_catalog import METHODS, MethodOptions, last_conv_layer, parse_methods
from deltalift.methods import interpolate
from deltalift.methods.lrp import LRP
from deltalift.methods.lrp.composites import EpsilonGammaBox


def tiny_cnn() -> nn.Module:
    """(N, 3, 8, 8) images, 4 classes; torch modules only, so it unpickles anywhere."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 4),
    ).eval()


@pytest.fixture(scope="module")
def model_and_inputs() -> tuple[nn.Module, torch.Tensor]:
    return tiny_cnn(), torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def every_method(model_and_inputs: tuple) -> deltalift.notebook.Explanation:
    model, x = model_and_inputs
    return deltalift.explain(model, x, list(METHODS), batch_size=2)


def noise_background(x: torch.Tensor) -> torch.Tensor:
    """The documented default SHAP background for the zero reference: ``(N, 8, ...)``, example
    ``i``'s references ``0 + 0.15 (max x_i - min x_i) eps_k``, ``eps`` drawn by numpy with seed 0."""
    eps = torch.from_numpy(np.random.default_rng(0).standard_normal((8, *x.shape[1:]))).float()
    return torch.stack([0.15 * float(row.max() - row.min()) * eps for row in x])


def direct(name: str, model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The method called as a user of the classes would, with the catalog's documented defaults."""
    background = noise_background(x)
    noise = {"nt_samples": 10, "noise_fraction": 0.15, "abs": False}
    if name == "deeplift":
        return DeepLift(model).attribute(x, baselines=0.0, target=target)
    if name == "deeplift-shap":
        return DeepLiftShap(model).attribute(x, baselines=background, target=target)
    if name == "gradient-shap":
        rows = []
        for i in range(len(x)):  # example i draws with seed 0 + i, numpy's and torch's
            np.random.seed(i)
            torch.manual_seed(i)
            rows.append(
                GradientShap(model).attribute(x[i : i + 1], background[i], n_samples=10, target=target[i : i + 1])
            )
        return torch.cat(rows)
    if name == "ig":
        return IntegratedGradients(model).attribute(x, baselines=0.0, target=target, n_steps=50)
    if name == "saliency":
        return Saliency(model).attribute(x, target=target)
    if name in ("smoothgrad", "smoothgrad-sq", "vargrad"):
        tunnel, nt_type = NoiseTunnel(Saliency(model)), name.replace("-", "_")
        rows = [  # example i draws with seed 0 + i
            tunnel.attribute(x[i : i + 1], nt_type=nt_type, random_state=i, target=target[i : i + 1], **noise)
            for i in range(len(x))
        ]
        return torch.cat(rows)
    if name == "gradcam":
        return interpolate(LayerGradCam(model, "2").attribute(x, target=target), (8, 8), "bilinear")
    if name == "guided-gradcam":
        return GuidedGradCam(model, "2").attribute(x, target=target)
    if name == "occlusion":
        return Occlusion(model).attribute(x, sliding_window_shapes=(3, 4, 4), strides=(3, 4, 4), target=target)
    if name == "lrp-epsilon-gamma-box":
        return LRP(model, EpsilonGammaBox(low=float(x.min()), high=float(x.max()))).attribute(x, target=target)
    if name.startswith("lrp-"):
        composite = {"lrp-alpha-beta": "epsilon_alpha2_beta1"}.get(name, name[4:].replace("-", "_"))
        return LRP(model, composite).attribute(x, target=target)
    classes = {"input-x-gradient": InputXGradient, "guided-backprop": GuidedBackprop, "deconvolution": Deconvolution}
    return classes[name](model).attribute(x, target=target)


@pytest.mark.parametrize("name", list(METHODS))
def test_each_method_is_its_class(name: str, model_and_inputs: tuple, every_method) -> None:
    model, x = model_and_inputs
    predicted = model(x).argmax(1)
    assert every_method.targets.tolist() == predicted.tolist()  # the same targets for every method
    expected = direct(name, model, x, predicted).detach().numpy()
    got = every_method.attributions[name]
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_deltas_mean_what_they_say(model_and_inputs: tuple, every_method) -> None:
    model, x = model_and_inputs
    t = every_method.targets
    with torch.no_grad():
        out = model(x).gather(1, torch.as_tensor(t)[:, None])[:, 0].numpy()
        at_zero = model(torch.zeros_like(x)).gather(1, torch.as_tensor(t)[:, None])[:, 0].numpy()
    sums = {name: a.reshape(len(x), -1).sum(1) for name, a in every_method.attributions.items()}
    # DeepLIFT and IG: sum of attributions - (t(x) - t(0))
    for name in ("deeplift", "ig"):
        np.testing.assert_allclose(every_method.deltas[name], sums[name] - (out - at_zero), atol=2e-5)
    assert np.abs(every_method.deltas["deeplift"]).max() < 1e-4
    # DeepLIFT-SHAP: the mean over the background of t(x) - t(b), plus the mean delta
    background = noise_background(x)  # (examples, references, ...)
    with torch.no_grad():
        at_background = np.stack([model(b)[:, int(c)].numpy() for b, c in zip(background, t)])
    gap = out - at_background.mean(1)
    np.testing.assert_allclose(sums["deeplift-shap"], gap + every_method.deltas["deeplift-shap"], atol=2e-5)
    # LRP: sum of relevances - t(x)
    np.testing.assert_allclose(every_method.deltas["lrp-epsilon"], sums["lrp-epsilon"] - out, atol=2e-5)
    assert set(every_method.deltas) == {name for name, spec in METHODS.items() if spec.delta}


def test_occlusion_window_by_hand(model_and_inputs: tuple) -> None:
    model, x = model_and_inputs
    # one window covering the whole image: every pixel gets t(x) - t(reference), the reference 0.5
    result = deltalift.explain(model, x, "occlusion", baselines=0.5, window=8, target=2)
    with torch.no_grad():
        gap = (model(x)[:, 2] - model(torch.full_like(x, 0.5))[:, 2]).numpy()
    np.testing.assert_allclose(
        result.attributions["occlusion"], np.broadcast_to(gap[:, None, None, None], x.shape), atol=1e-6
    )
    assert result.settings["occlusion"] == {"reference": "constant 0.5", "window": (3, 8, 8), "strides": (3, 8, 8)}


def test_options_reach_the_methods(model_and_inputs: tuple) -> None:
    model, x = model_and_inputs
    result = deltalift.explain(
        model, x, ["deeplift", "ig", "gradcam"], rule="reveal_cancel", n_steps=7, layer="0", baselines="mean", target=1
    )
    reference = x.mean(0, keepdim=True)
    expected = DeepLift(model, rule="reveal_cancel").attribute(x, baselines=reference, target=1)
    np.testing.assert_allclose(result.attributions["deeplift"], expected.numpy(), rtol=1e-5, atol=1e-6)
    expected = IntegratedGradients(model).attribute(x, baselines=reference, target=1, n_steps=7)
    np.testing.assert_allclose(result.attributions["ig"], expected.numpy(), rtol=1e-5, atol=1e-6)
    cam = LayerGradCam(model, "0").attribute(x, target=1)  # 8 x 8 already: no resizing
    np.testing.assert_allclose(result.attributions["gradcam"], cam.detach().numpy(), rtol=1e-5, atol=1e-6)
    assert result.settings["gradcam"]["layer"] == "0" and result.settings["ig"]["n_steps"] == 7
    assert result.targets.tolist() == [1, 1, 1] and result.predictions is not None
    assert "Explanation(methods=['deeplift', 'ig', 'gradcam']" in repr(result)


def test_names_aliases_and_layers() -> None:
    assert [s.name for s in parse_methods("DeepLIFT, integrated_gradients,grad-cam,lrp")] == [
        "deeplift",
        "ig",
        "gradcam",
        "lrp-epsilon",
    ]
    assert last_conv_layer(tiny_cnn(), torch.rand(1, 3, 8, 8)) == "2"
    with pytest.raises(ValueError, match="unknown method 'shapley'; methods: deeplift, deeplift-shap"):
        parse_methods("deeplift,shapley")
    with pytest.raises(ValueError, match="method 'ig' is given twice"):
        parse_methods(["ig", "integrated-gradients"])
    with pytest.raises(ValueError, match="no method given"):
        parse_methods(" , ")
    with pytest.raises(ValueError, match="no convolution layer for Grad-CAM"):
        last_conv_layer(nn.Sequential(nn.Linear(2, 2)), torch.rand(1, 2))
    with pytest.raises(ValueError, match="stride must be between 1 and the window"):
        MethodOptions(window=2, stride=3)
    with pytest.raises(ValueError, match="rule must be one of"):
        MethodOptions(rule="gradient")
    assert array_names(["deeplift"]) == {"deeplift": ("attributions.npy", "deltas.npy")}
    assert array_names(["ig", "saliency"])["saliency"] == ("attributions-saliency.npy", "deltas-saliency.npy")


class Reordered(nn.Module):
    """Convolutions registered in another order than they run: ``late`` is registered first,
    ``early`` next, and the 1x1 ``shortcut`` (registered last, run last) skips ``late``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.late = nn.Conv2d(4, 4, 3, padding=1)
        self.early = nn.Conv2d(3, 4, 3, padding=1)
        self.shortcut = nn.Conv2d(3, 4, 1)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head((self.late(torch.relu(self.early(x))) + self.shortcut(x)).mean((2, 3)))


def test_gradcam_default_layer_is_the_deepest_convolution_run() -> None:
    model = Reordered().eval()
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert last_conv_layer(model, x) == "late"  # not "shortcut" (registered and run last), not "early"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()) and not model.training
    assert not any(m._forward_hooks for m in model.modules())
    result = deltalift.explain(model, x, "gradcam", target=1)
    assert result.settings["gradcam"]["layer"] == "late"
    expected = interpolate(LayerGradCam(model, "late").attribute(x, target=1), (8, 8), "bilinear")
    np.testing.assert_allclose(result.attributions["gradcam"], expected.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_shap_background_does_not_depend_on_the_other_inputs(model_and_inputs: tuple, every_method) -> None:
    model, x = model_and_inputs
    names = ["deeplift-shap", "gradient-shap"]
    together = deltalift.explain(model, x, names, target=1, batch_size=3)
    first = deltalift.explain(model, x[:1], names, target=1)  # gradient-shap seeds example i with seed + i
    last = deltalift.explain(model, x[2:], "deeplift-shap", target=1)
    for name in names:
        np.testing.assert_allclose(first.attributions[name][0], together.attributions[name][0], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(
        last.attributions["deeplift-shap"][0], together.attributions["deeplift-shap"][2], atol=1e-7
    )
    settings = every_method.settings["deeplift-shap"]
    assert settings["reference"] == "zero" and settings["background"] == "reference + Gaussian noise"
    assert settings["references"] == 8 and settings["background_seed"] == 0


def test_a_reference_of_several_rows_is_the_shap_background(model_and_inputs: tuple) -> None:
    model, x = model_and_inputs
    rows = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    result = deltalift.explain(model, x, "deeplift-shap", baselines=rows, target=1)
    expected = DeepLiftShap(model).attribute(x, baselines=rows, target=1)
    np.testing.assert_allclose(result.attributions["deeplift-shap"], expected.detach().numpy(), rtol=1e-5, atol=1e-7)
    assert result.settings["deeplift-shap"]["background"] == "the reference's 5 rows"


def explain_cli(model_path: Path, inputs_path: Path, out: Path, *extra: str) -> int:
    argv = ["explain", "--model", str(model_path), "--inputs", str(inputs_path), "--out", str(out), "--no-progress"]
    return main([*argv, *extra])


def test_several_methods_write_one_array_each(model_and_inputs: tuple, tmp_path: Path) -> None:
    model, x = model_and_inputs
    torch.save(model, tmp_path / "cnn.pt")
    np.save(tmp_path / "x.npy", x.numpy())
    out = tmp_path / "out"
    code = explain_cli(tmp_path / "cnn.pt", tmp_path / "x.npy", out, "--method", "deeplift,saliency,occlusion")
    assert code == EXIT_OK
    files = sorted(p.name for p in out.iterdir())
    assert files == [
        "attributions-deeplift.npy",
        "attributions-occlusion.npy",
        "attributions-saliency.npy",
        "attributions.png",
        "deltas-deeplift.npy",  # only DeepLIFT has a delta
        "report.html",
        "targets.npy",
    ]
    predicted = model(x).argmax(1)
    np.testing.assert_allclose(
        np.load(out / "attributions-saliency.npy"), Saliency(model).attribute(x, target=predicted).numpy(), rtol=1e-6
    )
    html = (out / "report.html").read_text()
    assert html.count('class="panel method"') == 3 * 3 and html.count('class="panel input"') == 3
    assert f"predicted class {int(predicted[0])}, target {int(predicted[0])}" in html


def test_fasta_inputs(tmp_path: Path) -> None:
    from deltalift.genomics import one_hot_encode_fasta

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(4, 3, 5, padding=2), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 12, 2)).eval()
    torch.save(model, tmp_path / "seq.pt")
    (tmp_path / "s.fa").write_text(">first\nACGTACGTAAGG\n>second\nTTTTGGGGCCAA\n")
    out = tmp_path / "out"
    assert explain_cli(tmp_path / "seq.pt", tmp_path / "s.fa", out, "--method", "deeplift,ig", "--target", "1") == 0
    x = one_hot_encode_fasta(tmp_path / "s.fa")
    expected = DeepLift(model).attribute(x, baselines=0.0, target=1)
    np.testing.assert_allclose(np.load(out / "attributions-deeplift.npy"), expected.numpy(), rtol=1e-5, atol=1e-6)
    assert np.load(out / "attributions-ig.npy").shape == (2, 4, 12)
    html = (out / "report.html").read_text()
    assert "first &mdash;" in html and "second &mdash;" in html and html.count('class="map strip"') == 4
    assert not (out / "attributions.png").exists()  # sequences are not images


def test_preprocessing_options() -> None:
    parser = build_parser()

    def parsed(*extra: str) -> argparse.Namespace:
        return parser.parse_args(["explain", "--model", "m.pt", "--inputs", "photos", *extra])

    assert preprocess_from_args(parsed()) == Preprocess()
    assert preprocess_from_args(parsed("--preprocess", "torchvision")) == Preprocess(
        256, (224, 224), IMAGENET_MEAN, IMAGENET_STD
    )
    custom = preprocess_from_args(parsed("--resize", "40", "--crop", "32", "--mean", "0.5", "--std", "0.25", "--grey"))
    assert custom == Preprocess(40, (32, 32), (0.5,), (0.25,), channels=1)
    grey = preprocess_from_args(parsed("--preprocess", "timm", "--grey"))
    assert grey.channels == 1 and grey.mean == pytest.approx((sum(IMAGENET_MEAN) / 3,))


def test_help_lists_every_method(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["explain", "--help"])
    text = capsys.readouterr().out
    for name in METHODS:
        assert name in text


def test_errors_are_one_line(model_and_inputs: tuple, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, x = model_and_inputs
    torch.save(model, tmp_path / "cnn.pt")
    np.save(tmp_path / "x.npy", x.numpy())
    for extra, message in (
        (("--method", "deeplift,magic"), "unknown method 'magic'; methods: deeplift"),
        (("--method", "gradcam", "--layer", "head"), "--layer 'head' is not a module of the model"),
        (("--method", "occlusion", "--window", "2", "--stride", "3"), "stride must be between 1 and the window (2)"),
    ):
        assert explain_cli(tmp_path / "cnn.pt", tmp_path / "x.npy", tmp_path / "out", *extra) == EXIT_ERROR
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("deltalift: error: ") and message in err[0], err
    (tmp_path / "x.txt").write_text("1 2 3")
    assert explain_cli(tmp_path / "cnn.pt", tmp_path / "x.txt", tmp_path / "out") == EXIT_ERROR
    assert "an image (.png/.jpg/.jpeg), a folder of images or a FASTA file" in capsys.readouterr().err
    with pytest.raises(ValueError, match="got 2 targets for 3 examples"):
        deltalift.explain(model, x, "saliency", target=[0, 1])
    with pytest.raises(TypeError, match="not both"):
        deltalift.explain(model, x, "ig", options=MethodOptions(), n_steps=3)


def test_model_files_and_the_callers_mode(model_and_inputs: tuple, tmp_path: Path) -> None:
    model, x = model_and_inputs
    torch.save(model, tmp_path / "cnn.pt")
    np.save(tmp_path / "x.npy", x.numpy())
    from_files = deltalift.explain(tmp_path / "cnn.pt", str(tmp_path / "x.npy"), "saliency", target=0)
    expected = Saliency(model).attribute(x, target=0).numpy()
    np.testing.assert_allclose(from_files.attributions["saliency"], expected, rtol=1e-6)
    training = tiny_cnn().train()
    training[0].eval()  # mixed modes
    result = deltalift.explain(training, x, "saliency", target=0)
    assert [m.training for m in training.modules()][:3] == [True, False, True]  # each module's mode put back
    np.testing.assert_allclose(result.attributions["saliency"], expected, rtol=1e-6)


def test_exported_program_gradcam_finds_the_last_convolution(model_and_inputs: tuple, tmp_path: Path) -> None:
    model, x = model_and_inputs
    program = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, tmp_path / "cnn.pt2")
    np.save(tmp_path / "x.npy", x.numpy())
    out = tmp_path / "out"
    assert explain_cli(tmp_path / "cnn.pt2", tmp_path / "x.npy", out, "--method", "gradcam", "--target", "1") == 0
    # no Conv2d modules in an exported program: the last convolution of the captured graph, by node name
    cam = interpolate(LayerGradCam(model, "2").attribute(x, target=1), (8, 8), "bilinear")
    np.testing.assert_allclose(np.load(out / "attributions.npy"), cam.detach().numpy(), rtol=1e-5, atol=1e-6)
    assert "layer=node:" in (out / "report.html").read_text()
