"""``deltalift demo``: train a small CNN on handwritten digits and explain it with DeepLIFT.

The demo trains a small CNN on scikit-learn's bundled 8x8 handwritten digits (no download),
explains a few test digits with DeepLIFT against an all-zero (blank background) reference, and
writes a figure with each digit beside its attribution map for the predicted class and for the
runner-up class.  It needs the ``demo`` extra: ``pip install 'deltalift[demo]'``.

The attributions of each map sum to the change of the class logit from the blank image to the
digit, ``sum_i C_i = t(x) - t(0)`` (summation-to-delta; Shrikumar, Greenside & Kundaje 2017,
section 3.1); the all-zero reference is the one of the paper's MNIST experiments (section 4.1).

The demo also saves the model and the explained digits, ready for ``deltalift explain``
(:mod:`deltalift.explain_files`).

References
----------
Shrikumar A, Greenside P, Kundaje A (2017). Learning Important Features Through Propagating
Activation Differences. ICML.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from deltalift.methods import DeepLift
from deltalift.runtime import DEFAULT_OUT, Echo, progress, torch_threads

Tensor = torch.Tensor

MISSING_DEMO_EXTRA = (
    "the demo needs scikit-learn and tqdm, which are not installed. Install them with: pip install 'deltalift[demo]'"
)


class DigitsCNN(nn.Module):
    """A small CNN for 8x8 grey digits: two 3x3 convolutions, max pooling, two dense layers."""

    def __init__(self, n_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, n_classes))

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(N, n_classes)`` for images ``(N, 1, 8, 8)`` with values in ``[0, 1]``."""
        return self.classifier(self.features(x))


@dataclass
class DigitsData:
    """Digits split into train and test: images ``(N, 1, 8, 8)`` in ``[0, 1]``, integer labels."""

    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor


def load_digits_data(seed: int = 0, test_fraction: float = 0.2) -> DigitsData:
    """scikit-learn's 1797 bundled 8x8 digits, scaled to ``[0, 1]``, split stratified with ``seed``."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as exc:
        raise ImportError(MISSING_DEMO_EXTRA) from exc
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    split = train_test_split(images, digits.target, test_size=test_fraction, random_state=seed, stratify=digits.target)
    train_x, test_x, train_y, test_y = (torch.from_numpy(np.ascontiguousarray(a)) for a in split)
    return DigitsData(train_x, train_y.long(), test_x, test_y.long())


def build_model(seed: int) -> DigitsCNN:
    """A freshly initialised :class:`DigitsCNN`; the global random state is left untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return DigitsCNN()


def train_classifier(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    epochs: int,
    seed: int,
    batch_size: int = 32,
    learning_rate: float = 3e-3,
    show_progress: bool = True,
    loss_fn: Callable[[nn.Module, Tensor, Tensor], Tensor] | None = None,
) -> float:
    """Train ``model`` with Adam and cross-entropy, shuffling with ``seed``; return the last epoch's mean loss.

    ``loss_fn(model, images, labels)``, if given, replaces the cross-entropy of ``model(images)``."""
    optimiser = torch.optim.Adam(model.parameters(), lr=learning_rate)
    generator = torch.Generator().manual_seed(seed)
    batches_per_epoch = -(-len(images) // batch_size)
    steps = [(epoch, start) for epoch in range(epochs) for start in range(0, len(images), batch_size)]
    model.train()
    losses: list[float] = []
    order = torch.arange(len(images))
    bar = progress(steps, show_progress, desc="training", unit="batch", leave=False)
    for epoch, start in bar:
        if start == 0:
            order = torch.randperm(len(images), generator=generator)
            losses = []
        index = order[start : start + batch_size]
        if loss_fn is None:
            loss = nn.functional.cross_entropy(model(images[index]), labels[index])
        else:
            loss = loss_fn(model, images[index], labels[index])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
        if len(losses) == batches_per_epoch and hasattr(bar, "set_postfix"):
            bar.set_postfix(epoch=epoch + 1, loss=f"{np.mean(losses):.3f}")
    model.eval()
    return float(np.mean(losses)) if losses else float("nan")


def accuracy(model: nn.Module, images: Tensor, labels: Tensor) -> float:
    """The fraction of ``images`` whose arg-max logit is the label."""
    with torch.no_grad():
        return float((model(images).argmax(1) == labels).float().mean())


def pick_examples(labels: Tensor, n: int) -> Tensor:
    """Indices of ``n`` examples of distinct classes where possible (the first of each class, in order)."""
    chosen: list[int] = []
    seen: set[int] = set()
    for i, label in enumerate(labels.tolist()):
        if label not in seen:
            chosen.append(i)
            seen.add(label)
        if len(chosen) == n:
            break
    return torch.tensor(chosen, dtype=torch.long)


@dataclass
class DigitExplanation:
    """DeepLIFT attributions of some digits for their predicted and runner-up classes."""

    images: Tensor
    labels: Tensor
    predicted: Tensor
    runner_up: Tensor
    probabilities: Tensor
    attributions_predicted: Tensor
    attributions_runner_up: Tensor
    max_delta: float


def explain_digits(model: nn.Module, images: Tensor, labels: Tensor) -> DigitExplanation:
    """Explain the predicted and runner-up logits of ``model`` on ``images`` against a zero reference."""
    with torch.no_grad():
        logits = model(images)
    top2 = logits.topk(2, dim=1).indices
    explainer = DeepLift(model)
    predicted, delta_predicted = explainer.attribute(
        images, baselines=0.0, target=top2[:, 0], return_convergence_delta=True
    )
    runner_up, delta_runner_up = explainer.attribute(
        images, baselines=0.0, target=top2[:, 1], return_convergence_delta=True
    )
    max_delta = float(torch.cat([delta_predicted, delta_runner_up]).abs().max())
    return DigitExplanation(images, labels, top2[:, 0], top2[:, 1], logits.softmax(1), predicted, runner_up, max_delta)


def digits_figure(explanation: DigitExplanation, path: Path) -> Path:
    """Write each digit beside its DeepLIFT maps for the predicted and the runner-up class."""
    from deltalift.plot import plot_image_attributions

    e = explanation
    titles = [
        f"label {int(y)}, predicted {int(p)}\n(p = {float(e.probabilities[i, p]):.2f})"
        for i, (y, p) in enumerate(zip(e.labels, e.predicted))
    ]
    sums = [a.flatten(1).sum(1).tolist() for a in (e.attributions_predicted, e.attributions_runner_up)]
    map_titles = [
        [
            f"class {int(p)} (predicted)\nsum = Δlogit = {sums[0][i]:.1f}",
            f"class {int(r)} (runner-up)\nsum = Δlogit = {sums[1][i]:.1f}",
        ]
        for i, (p, r) in enumerate(zip(e.predicted, e.runner_up))
    ]
    plot_image_attributions(
        e.images,
        [e.attributions_predicted, e.attributions_runner_up],
        titles,
        path,
        attribution_titles=map_titles,
        title="DeepLIFT vs. a blank image: red raises the class logit, blue lowers it",
        image_cmap="gray_r",
    )
    return path


@dataclass
class DemoResult:
    """What the demo produced."""

    accuracy: float
    max_delta: float
    figure_path: Path
    model_path: Path
    inputs_path: Path
    seconds: float


def run_demo(
    out_dir: str | Path = DEFAULT_OUT,
    epochs: int = 6,
    seed: int = 0,
    n_examples: int = 6,
    show_progress: bool = True,
    echo: Echo = print,
) -> DemoResult:
    """Train a digits CNN, explain ``n_examples`` test digits with DeepLIFT, write a figure.

    Also writes the trained model (``digits_cnn.pt``) and the explained digits
    (``digits_examples.npy``) to ``out_dir``, ready for ``deltalift explain``.  Deterministic
    for a given ``seed``; the global random state and thread count are restored afterwards.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    if n_examples < 1:
        raise ValueError(f"n_examples must be at least 1, got {n_examples}")
    started = time.perf_counter()
    out = Path(out_dir)
    data = load_digits_data(seed)
    echo(f"digits: {len(data.train_images)} training and {len(data.test_images)} test images of 8x8 pixels")
    with torch_threads(1):
        model = build_model(seed)
        loss = train_classifier(model, data.train_images, data.train_labels, epochs, seed, show_progress=show_progress)
        test_accuracy = accuracy(model, data.test_images, data.test_labels)
        echo(f"trained {epochs} epochs (last loss {loss:.3f}); test accuracy {test_accuracy:.1%}")
        chosen = pick_examples(data.test_labels, n_examples)
        explanation = explain_digits(model, data.test_images[chosen], data.test_labels[chosen])
    echo(f"DeepLIFT on {len(chosen)} test digits, zero reference: max |convergence delta| {explanation.max_delta:.2e}")
    out.mkdir(parents=True, exist_ok=True)
    figure_path = digits_figure(explanation, out / "digits_deeplift.png")
    model_path, inputs_path = out / "digits_cnn.pt", out / "digits_examples.npy"
    torch.save(model, model_path)
    np.save(inputs_path, explanation.images.numpy())
    echo(f"wrote {figure_path}")
    echo(f"try next: deltalift explain --model {model_path} --inputs {inputs_path} --out {out / 'explain'}")
    seconds = time.perf_counter() - started
    return DemoResult(test_accuracy, explanation.max_delta, figure_path, model_path, inputs_path, seconds)
