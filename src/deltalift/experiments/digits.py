"""The digits model of the paper's shape, its data (scikit-learn's bundled digits or MNIST from IDX files), and its training.

The paper's MNIST network (Shrikumar, Greenside & Kundaje 2017, section 4.1 and appendix):
two convolutional layers with strides instead of pooling, each followed by a ReLU, a dense
layer with a ReLU, and a softmax output; the reference is an all-zero (black) image.
:class:`PaperCNN` keeps that shape for any square grey image; its ``forward`` returns the logits
(the softmax's input), which is what the paper explains.

:func:`train_digits_model` trains one on scikit-learn's 1797 bundled 8x8 digits (no download) or
on MNIST read from a folder of the IDX files (:func:`load_mnist_idx`), seeded.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from deltalift.demo import DigitsData, accuracy, load_digits_data, train_classifier

Tensor = torch.Tensor

__all__ = ["DigitsModel", "PaperCNN", "load_mnist_idx", "read_idx", "train_digits_model"]


class PaperCNN(nn.Module):
    """Two strided convolutions (ReLU), a dense layer (ReLU) and the logits of a softmax output.

    Parameters
    ----------
    image_size:
        Height and width of the (square, one-channel) images: 8 for scikit-learn's digits, 28 for MNIST.
    n_classes:
        Outputs.
    channels:
        Filters of the two convolutions.
    hidden:
        Units of the dense layer.
    """

    def __init__(
        self, image_size: int = 8, n_classes: int = 10, channels: tuple[int, int] = (16, 32), hidden: int = 64
    ) -> None:
        super().__init__()
        if image_size < 4:
            raise ValueError(f"image_size must be at least 4, got {image_size}")
        kernel = 3 if image_size <= 16 else 5
        self.conv1 = nn.Conv2d(1, channels[0], kernel, stride=2, padding=kernel // 2)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(channels[0], channels[1], kernel, stride=2, padding=kernel // 2)
        self.relu2 = nn.ReLU()
        side = (image_size + 1) // 2
        side = (side + 1) // 2
        self.flatten = nn.Flatten()
        self.dense = nn.Linear(channels[1] * side * side, hidden)
        self.relu3 = nn.ReLU()
        self.output = nn.Linear(hidden, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(N, n_classes)`` of images ``(N, 1, H, W)``."""
        h = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        return self.output(self.relu3(self.dense(self.flatten(h))))


def read_idx(path: Path | str) -> np.ndarray:
    """An IDX file (LeCun's MNIST format; plain or gzipped) as a numpy array.

    The header is two zero bytes, a type code (``0x08`` unsigned bytes, ``0x09`` signed bytes,
    ``0x0B`` int16, ``0x0C`` int32, ``0x0D`` float32, ``0x0E`` float64), the number of
    dimensions, and each dimension as a big-endian 32-bit integer; the data follow, big-endian.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path} is not an IDX file (its first two bytes must be zero)")
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if raw[2] not in dtypes:
        raise ValueError(f"{path}: unknown IDX type code 0x{raw[2]:02X}")
    n_dims = raw[3]
    if len(raw) < 4 + 4 * n_dims:
        raise ValueError(f"{path}: the IDX header is cut short")
    shape = struct.unpack(f">{n_dims}I", raw[4 : 4 + 4 * n_dims])
    dtype = np.dtype(dtypes[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    body = raw[4 + 4 * n_dims :]
    if len(body) != expected:
        raise ValueError(f"{path}: the header gives shape {shape} ({expected} bytes of data), the file has {len(body)}")
    return np.frombuffer(body, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def _find_idx(folder: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"no {stem} (or {stem}.gz) in {folder}")


def load_mnist_idx(folder: Path | str) -> DigitsData:
    """MNIST from a folder holding ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (each optionally ``.gz``), scaled to ``[0, 1]``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"MNIST folder {folder} does not exist")
    arrays = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(_find_idx(folder, f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(_find_idx(folder, f"{prefix}-labels-idx1-ubyte"))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(
                f"MNIST {split} files: expected images (N, H, W) and labels (N,), got {images.shape} and {labels.shape}"
            )
        scale = 255.0 if images.dtype == np.uint8 else 1.0
        arrays[split] = (
            torch.from_numpy((images.astype(np.float32) / scale)[:, None].copy()),
            torch.from_numpy(labels.astype(np.int64)),
        )
    return DigitsData(arrays["train"][0], arrays["train"][1], arrays["test"][0], arrays["test"][1])


@dataclass
class DigitsModel:
    """A trained :class:`PaperCNN` (eval mode), its data, and its test accuracy."""

    model: PaperCNN
    data: DigitsData
    test_accuracy: float
    epochs: int


def train_digits_model(
    seed: int = 0, quick: bool = False, show_progress: bool = True, mnist: Path | str | None = None
) -> tuple[PaperCNN, DigitsData]:
    """Train a :class:`PaperCNN` on scikit-learn's digits (or on MNIST from the IDX folder ``mnist``).

    ``quick`` trains 2 epochs on a fifth of the training set (a second on one core); otherwise 15
    epochs on scikit-learn's digits, 2 on MNIST.  Seeded by ``seed`` (the split, the
    initialisation and the shuffling); the global random state is left untouched.  Returns the
    model in eval mode and the data; :func:`train_digits_model_with_accuracy` also reports the
    test accuracy.
    """
    trained = train_digits_model_with_accuracy(seed, quick, show_progress, mnist)
    return trained.model, trained.data


def train_digits_model_with_accuracy(
    seed: int = 0, quick: bool = False, show_progress: bool = True, mnist: Path | str | None = None
) -> DigitsModel:
    """As :func:`train_digits_model`, returning a :class:`DigitsModel` with the test accuracy."""
    data = load_digits_data(seed) if mnist is None else load_mnist_idx(mnist)
    images, labels = data.train_images, data.train_labels
    if quick:
        keep = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[: max(len(images) // 5, 50)]
        images, labels = images[keep], labels[keep]
    epochs = 2 if quick else (15 if mnist is None else 2)
    n_classes = int(max(int(data.train_labels.max()), int(data.test_labels.max())) + 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = PaperCNN(image_size=int(images.shape[-1]), n_classes=max(n_classes, 2))
    learning_rate = 1e-2 if quick else 3e-3
    train_classifier(
        model, images, labels, epochs, seed, batch_size=32, learning_rate=learning_rate, show_progress=show_progress
    )
    model.eval()
    return DigitsModel(model, data, accuracy(model, data.test_images, data.test_labels), epochs)
