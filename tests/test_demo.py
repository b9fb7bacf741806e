"""The digits demo end to end, its building blocks, and the heatmap figures."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from deltalift import DeepLift
from deltalift.demo import build_model, load_digits_data, pick_examples, run_demo, train_classifier
from deltalift.explain_files import looks_like_images, make_baseline
from deltalift.plot import attribution_map, plot_image_attributions
from deltalift.plot.heatmap import symmetric_limit
from deltalift.runtime import torch_threads

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")


def is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_SIGNATURE


# --- the demo -------------------------------------------------------------------------------


def test_demo_end_to_end(tmp_path: Path) -> None:
    threads, rng_state = torch.get_num_threads(), torch.get_rng_state()
    lines: list[str] = []
    result = run_demo(tmp_path / "out", epochs=3, seed=0, n_examples=4, show_progress=False, echo=lines.append)

    assert result.accuracy > 0.85  # chance is 0.10
    assert result.max_delta < 1e-4
    assert is_png(result.figure_path)
    assert result.figure_path.parent == tmp_path / "out"
    assert any(str(result.figure_path) in line for line in lines)
    assert any("test accuracy" in line for line in lines)
    # the saved model and digits are what `deltalift explain` needs, and reproduce the model's outputs
    model = torch.load(result.model_path, weights_only=False)
    digits = torch.from_numpy(np.load(result.inputs_path))
    assert digits.shape == (4, 1, 8, 8)
    attributions, delta = DeepLift(model).attribute(
        digits, target=model(digits).argmax(1), return_convergence_delta=True
    )
    assert float(delta.abs().max()) < 1e-4
    # global state is left as it was
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.get_rng_state(), rng_state)


def test_training_is_deterministic() -> None:
    data = load_digits_data(seed=3)
    images, labels = data.train_images[:256], data.train_labels[:256]
    models = [build_model(seed=3) for _ in range(2)]
    with torch_threads(1):
        losses = [train_classifier(m, images, labels, epochs=1, seed=3, show_progress=False) for m in models]
    assert losses[0] == losses[1]
    for a, b in zip(models[0].state_dict().values(), models[1].state_dict().values()):
        assert torch.equal(a, b)
    assert not models[0].training


def test_digits_data_split() -> None:
    data = load_digits_data(seed=0)
    assert data.train_images.shape[1:] == (1, 8, 8) and data.train_images.dtype == torch.float32
    assert len(data.train_images) + len(data.test_images) == 1797
    assert 0.0 <= float(data.train_images.min()) and float(data.train_images.max()) <= 1.0
    assert set(data.test_labels.tolist()) == set(range(10))  # stratified
    again = load_digits_data(seed=0)
    assert torch.equal(data.test_images, again.test_images)


def test_pick_examples_prefers_distinct_classes() -> None:
    labels = torch.tensor([3, 3, 1, 3, 2, 1, 0])
    assert pick_examples(labels, 3).tolist() == [0, 2, 4]
    assert pick_examples(labels, 10).tolist() == [0, 2, 4, 6]


def test_run_demo_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="epochs must be at least 1"):
        run_demo(tmp_path, epochs=0)


# --- helpers of `explain` -------------------------------------------------------------------


def test_make_baseline() -> None:
    inputs = torch.arange(12.0).reshape(3, 4)
    assert make_baseline("zero", inputs) == 0.0
    assert make_baseline("0.25", inputs) == 0.25
    assert torch.equal(make_baseline("mean", inputs), inputs.mean(0, keepdim=True))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="--baseline must be"):
        make_baseline("blurry", inputs)
    with pytest.raises(ValueError, match="finite"):
        make_baseline("nan", inputs)


@pytest.mark.parametrize(
    ("shape", "expected"),
    [((5, 1, 8, 8), True), ((5, 3, 32, 32), True), ((5, 28, 28), True), ((5, 4, 1000), False), ((5, 10), False)],
)
def test_looks_like_images(shape: tuple[int, ...], expected: bool) -> None:
    assert looks_like_images(shape) is expected


# --- figures --------------------------------------------------------------------------------


def test_plot_writes_png_with_symmetric_limits(tmp_path: Path) -> None:
    images = torch.rand(3, 1, 6, 6)
    first = torch.randn(3, 1, 6, 6)
    second = 5 * torch.randn(3, 1, 6, 6)
    path = tmp_path / "sub" / "maps.png"
    figure = plot_image_attributions(
        images, [first, second], titles=["a", "b", "c"], path=path, attribution_titles=["one", "two"]
    )
    assert is_png(path)
    axes = figure.axes
    for row in range(3):
        limit = max(float(first[row].abs().max()), float(second[row].abs().max()))
        for column in (1, 2):  # both maps of an image share one symmetric scale
            low, high = axes[row * 3 + column].images[0].get_clim()
            assert low == pytest.approx(-limit) and high == pytest.approx(limit)
    assert axes[0].get_title() == "a" and axes[1].get_title() == "one"


def test_plot_colour_images_and_channel_sum(tmp_path: Path) -> None:
    images = np.random.default_rng(0).uniform(-2, 3, size=(2, 3, 5, 7))
    attributions = np.random.default_rng(1).normal(size=(2, 3, 5, 7))
    figure = plot_image_attributions(images, attributions, path=tmp_path / "rgb.png")
    assert is_png(tmp_path / "rgb.png")
    shown = figure.axes[0].images[0].get_array()
    assert shown.shape == (5, 7, 3) and 0.0 <= shown.min() and shown.max() <= 1.0
    np.testing.assert_allclose(attribution_map(attributions), attributions.sum(1))
    assert symmetric_limit([np.zeros((2, 2))]) == 1.0


def test_plot_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="attribution map 0 has shape"):
        plot_image_attributions(torch.rand(2, 1, 6, 6), torch.rand(2, 1, 5, 5))
    with pytest.raises(ValueError, match="got 1 titles for 2 images"):
        plot_image_attributions(torch.rand(2, 6, 6), torch.rand(2, 6, 6), titles=["x"])
    with pytest.raises(ValueError, match="expected a batch of images"):
        plot_image_attributions(torch.rand(2, 36), torch.rand(2, 36))


def test_plot_without_matplotlib_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r"pip install 'deltalift\[plot\]'"):
        plot_image_attributions(torch.rand(1, 4, 4), torch.rand(1, 4, 4))
