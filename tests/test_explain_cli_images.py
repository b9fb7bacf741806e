"""End to end: a folder of PNGs written by the test, a torchvision ResNet saved by the test (built
small: one block per stage), every method of ``deltalift explain`` in one command, and the HTML
report rendered in headless Chromium."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from deltalift.cli import EXIT_OK, main
from deltalift.images import IMAGENET_MEAN, IMAGENET_STD, Preprocess, load_images
from deltalift.method_catalog import METHODS

Image = pytest.importorskip("PIL.Image")
torchvision = pytest.importorskip("torchvision")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def photos_and_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, torch.nn.Module]:
    folder = tmp_path_factory.mktemp("e2e")
    photos = folder / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for name, (height, width) in (("a.png", (40, 36)), ("b.png", (36, 44))):
        smooth = rng.random((height // 4 + 1, width // 4 + 1, 3))  # blobs, upsampled: photo-like structure
        pixels = np.kron(smooth, np.ones((4, 4, 1)))[:height, :width] * 255
        Image.fromarray(pixels.astype(np.uint8)).save(photos / name)
    torch.manual_seed(0)
    # torchvision's ResNet built small: one basic block per stage (ResNet-18 has two), 3 classes
    model = torchvision.models.ResNet(torchvision.models.resnet.BasicBlock, [1, 1, 1, 1], num_classes=3).eval()
    torch.save(model, folder / "resnet10.pt")
    return photos, folder / "resnet10.pt", model


@pytest.fixture(scope="module")
def explained(photos_and_model: tuple, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.Tensor]:
    """One run of the command with every method; the output folder and the inputs as the model saw them."""
    photos, model_path, model = photos_and_model
    out = tmp_path_factory.mktemp("explained")
    argv = ["explain", "--model", str(model_path), "--inputs", str(photos), "--out", str(out), "--no-progress"]
    options = ["--preprocess", "torchvision", "--resize", "34", "--crop", "32", "--window", "8"]
    options += ["--n-steps", "16", "--nt-samples", "3", "--shap-references", "3", "--layer", "layer4"]
    options += ["--method", ",".join(METHODS)]
    assert main(argv + options) == EXIT_OK
    # the inputs: the folder read with the documented preprocessing
    return out, load_images(photos, Preprocess(34, 32, IMAGENET_MEAN, IMAGENET_STD)).inputs


def test_every_method_on_an_image_folder(photos_and_model: tuple, explained: tuple) -> None:
    _, _, model = photos_and_model
    out, x = explained
    predicted = model(x).argmax(1)
    assert np.load(out / "targets.npy").tolist() == predicted.tolist()
    for name in METHODS:
        shape = (2, 1, 32, 32) if name == "gradcam" else (2, 3, 32, 32)
        values = np.load(out / f"attributions-{name}.npy")
        assert values.shape == shape and np.isfinite(values).all() and np.abs(values).max() > 0, name
    # DeepLIFT, checked against the model itself: summation-to-delta, sum C = t(x) - t(0) per image
    attributions = np.load(out / "attributions-deeplift.npy")
    with torch.no_grad():
        gap = (model(x) - model(torch.zeros_like(x))).gather(1, predicted[:, None])[:, 0].numpy()
    np.testing.assert_allclose(attributions.reshape(2, -1).sum(1), gap, rtol=1e-4, atol=1e-5)
    assert np.abs(np.load(out / "deltas-deeplift.npy")).max() < 1e-4
    # Grad-CAM re-derived with plain autograd at --layer layer4 (the last stage's output):
    # sum_c mean_hw(dt/dA_c) A_c, resized bilinearly to the input
    seen: list[torch.Tensor] = []
    hook = model.layer4.register_forward_hook(lambda module, args, output: seen.append(output))
    try:
        t = model(x).gather(1, predicted[:, None]).sum()
    finally:
        hook.remove()
    (gradient,) = torch.autograd.grad(t, seen[0])
    cam = (gradient.mean((2, 3), keepdim=True) * seen[0]).sum(1, keepdim=True)
    cam = torch.nn.functional.interpolate(cam, (32, 32), mode="bilinear")
    np.testing.assert_allclose(np.load(out / "attributions-gradcam.npy"), cam.detach().numpy(), rtol=1e-4, atol=1e-6)
    assert (out / "attributions.png").read_bytes()[:8] == PNG_SIGNATURE
    html = (out / "report.html").read_text()
    for i, name in enumerate(("a.png", "b.png")):
        p = int(predicted[i])
        assert f"{name} &mdash; predicted class {p}, target {p}" in html
    assert "layer=layer4," in html and "n_steps=16" in html and "composite=epsilon_plus_flat" in html


def test_gradcam_default_layer_in_resnets(photos_and_model: tuple) -> None:
    """The deepest convolution run, not the last registered (the shortcut ``layer4.0.downsample.0``)."""
    from deltalift.method_catalog import last_conv_layer

    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert last_conv_layer(torchvision.models.resnet18(num_classes=3).eval(), x) == "layer4.1.conv2"
    assert last_conv_layer(photos_and_model[2], x) == "layer4.0.conv2"  # one block per stage


def test_the_report_in_headless_chromium(explained: tuple, tmp_path: Path) -> None:
    from test_report import count_panels, screenshot

    out, _ = explained
    pixels = screenshot(out / "report.html", tmp_path / "report.png", width=1600, height=2600)
    assert count_panels(pixels) == 2 * (1 + len(METHODS))  # per image: the input and one panel per method
    assert (pixels[-40:] == 255).all()  # the page ends above the window's bottom: nothing was cut off
