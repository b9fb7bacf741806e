"""Image files as model inputs: PNG/JPEG loading with Pillow, resize, centre crop, mean/std normalisation.

The preprocessing of one image, in this order (torchvision's ``Resize`` -> ``CenterCrop`` ->
``ToTensor`` -> ``Normalize``):

1. convert to RGB (3 channels) or to grey ``L`` (1 channel);
2. resize so that the *shorter* side is ``resize`` pixels, the longer side
   ``int(resize * long / short)`` (torchvision's rule), with Pillow's bilinear, bicubic or
   nearest filter; ``resize=None`` keeps the size;
3. centre crop to ``crop = (height, width)``: top ``round((H - h) / 2)``, left
   ``round((W - w) / 2)`` (torchvision's ``CenterCrop``); ``crop=None`` keeps the whole image;
4. scale the 8-bit values to ``[0, 1]`` (``v / 255``), channels first;
5. normalise each channel ``c``: ``x_c = (v_c - mean_c) / std_c``.

:data:`PRESETS` names the two common conventions: ``"torchvision"`` (ImageNet: resize 256,
crop 224, bilinear, ImageNet mean/std, as the weights' ``transforms()`` of torchvision's
classification models) and ``"timm"`` (the defaults of timm's ``resolve_data_config``: input
224, ``crop_pct`` 0.875 so resize ``floor(224 / 0.875) = 256``, bicubic, ImageNet mean/std).
:func:`from_timm_config` turns any ``resolve_data_config`` dict into a :class:`Preprocess`
without timm installed.  ``"none"`` only scales to ``[0, 1]``.

Pillow is imported only when an image is read (``pip install 'deltalift[images]'``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "IMAGE_SUFFIXES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PRESETS",
    "LoadedImages",
    "Preprocess",
    "from_timm_config",
    "image_files",
    "load_images",
    "preprocess_image",
    "preset",
]

#: File suffixes read as images (case is ignored).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
#: The ImageNet channel means and standard deviations (torchvision's and timm's defaults).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Pillow's filters by name.
INTERPOLATIONS = ("nearest", "bilinear", "bicubic")

MISSING_PILLOW = "reading images needs Pillow, which is not installed. Install it with: pip install 'deltalift[images]'"


def _pair(value: int | Sequence[int] | None, what: str) -> tuple[int, int] | None:
    if value is None:
        return None
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in pair):
        raise ValueError(f"{what} must be a positive int or (height, width), got {value!r}")
    return (int(pair[0]), int(pair[1]))


@dataclass(frozen=True)
class Preprocess:
    """How an image file becomes a model input; see the module's docstring for the steps.

    Attributes
    ----------
    resize:
        The shorter side after resizing, in pixels; ``None`` keeps the size.
    crop:
        ``(height, width)`` of the centre crop (an int for a square); ``None`` keeps the image.
    mean, std:
        Per-channel mean and standard deviation of the normalisation (of the ``[0, 1]`` values);
        one value each for grey images.
    interpolation:
        ``"bilinear"`` (default), ``"bicubic"`` or ``"nearest"``.
    channels:
        3 (RGB) or 1 (grey).
    """

    resize: int | None = None
    crop: tuple[int, int] | None = None
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    interpolation: str = "bilinear"
    channels: int = 3
    name: str = field(default="custom", compare=False)

    def __post_init__(self) -> None:
        if self.resize is not None and (
            isinstance(self.resize, bool) or not isinstance(self.resize, int) or self.resize < 1
        ):
            raise ValueError(f"resize must be a positive int or None, got {self.resize!r}")
        object.__setattr__(self, "crop", _pair(self.crop, "crop"))
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {self.channels!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")
        mean, std = tuple(float(m) for m in self.mean), tuple(float(s) for s in self.std)
        if self.channels == 1 and len(mean) == 3 and len(std) == 3:
            mean, std = (sum(mean) / 3,), (sum(std) / 3,)  # grey: the channels' average
        if len(mean) != self.channels or len(std) != self.channels:
            raise ValueError(
                f"mean and std need {self.channels} value(s) for {self.channels}-channel images, "
                f"got {len(mean)} and {len(std)}"
            )
        if not all(math.isfinite(s) and s > 0 for s in std) or not all(math.isfinite(m) for m in mean):
            raise ValueError(f"std must be positive and mean finite, got mean={mean}, std={std}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    def settings(self) -> dict[str, Any]:
        """The settings as plain values, for reports."""
        return {
            "preset": self.name,
            "resize": self.resize,
            "crop": self.crop,
            "mean": self.mean,
            "std": self.std,
            "interpolation": self.interpolation,
            "channels": self.channels,
        }

    def replace(self, **changes: Any) -> Preprocess:
        """A copy with some settings changed (named ``custom`` unless ``name`` is given)."""
        values = {**self.settings(), "name": "custom", **changes}
        values.pop("preset")
        return Preprocess(**values)


def from_timm_config(config: Mapping[str, Any]) -> Preprocess:
    """The :class:`Preprocess` of timm's evaluation transform for a ``resolve_data_config`` dict.

    timm (``timm.data.transforms_factory.transforms_imagenet_eval``) resizes the shorter side to
    ``floor(size / crop_pct)`` and centre crops ``size``; keys read: ``input_size`` ``(C, H, W)``,
    ``crop_pct`` (default 0.875), ``interpolation`` (default ``"bicubic"``), ``mean``, ``std``
    (default ImageNet's), ``crop_mode`` (only ``"center"`` is supported).

    Raises
    ------
    ValueError
        Another crop mode, a non-square input size, or an unknown interpolation.
    """
    channels, height, width = tuple(config.get("input_size", (3, 224, 224)))
    if height != width:
        raise ValueError(f"timm's non-square input sizes resize by keeping the ratio; not supported: {height}x{width}")
    crop_mode = config.get("crop_mode", "center")
    if crop_mode != "center":
        raise ValueError(f"only timm's crop_mode 'center' is supported, got {crop_mode!r}")
    crop_pct = float(config.get("crop_pct", 0.875) or 0.875)
    interpolation = str(config.get("interpolation", "bicubic"))
    if interpolation == "random":
        interpolation = "bilinear"  # timm's evaluation transform maps random to bilinear
    return Preprocess(
        resize=math.floor(height / crop_pct),
        crop=(height, width),
        mean=tuple(config.get("mean", IMAGENET_MEAN)),
        std=tuple(config.get("std", IMAGENET_STD)),
        interpolation=interpolation,
        channels=int(channels),
        name="timm",
    )


#: The named conventions of ``--preprocess``.
PRESETS: dict[str, Preprocess] = {
    "none": Preprocess(name="none"),
    "torchvision": Preprocess(256, (224, 224), IMAGENET_MEAN, IMAGENET_STD, "bilinear", 3, name="torchvision"),
    "timm": from_timm_config({}),
}


def preset(name: str) -> Preprocess:
    """The preset called ``name`` (``"none"``, ``"torchvision"`` or ``"timm"``)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preprocessing preset {name!r}; presets: {', '.join(PRESETS)}")
    return PRESETS[name]


def _pillow() -> Any:
    try:
        from PIL import Image
    except ImportError as exc:
        raise ImportError(MISSING_PILLOW) from exc
    return Image


def resized_size(width: int, height: int, shorter: int) -> tuple[int, int]:
    """``(width, height)`` with the shorter side ``shorter`` and the longer ``int(shorter * long / short)``."""
    if width <= height:
        return shorter, int(shorter * height / width)
    return int(shorter * width / height), shorter


def preprocess_image(image: Any, preprocess: Preprocess) -> tuple[torch.Tensor, np.ndarray]:
    """One Pillow image as a model input ``(C, H, W)`` float32, and for display ``(H, W, C)`` in ``[0, 1]``.

    The display image is the resized and cropped image before normalisation.

    Raises
    ------
    ValueError
        The image is smaller than the crop.
    """
    Image = _pillow()
    image = image.convert("RGB" if preprocess.channels == 3 else "L")
    if preprocess.resize is not None:
        filters = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}
        width, height = image.size
        image = image.resize(resized_size(width, height, preprocess.resize), filters[preprocess.interpolation])
    if preprocess.crop is not None:
        height, width = preprocess.crop
        if image.height < height or image.width < width:
            raise ValueError(
                f"the image is {image.height}x{image.width} after resizing, smaller than the crop {height}x{width}"
            )
        top = int(round((image.height - height) / 2.0))
        left = int(round((image.width - width) / 2.0))
        image = image.crop((left, top, left + width, top + height))
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    mean = np.asarray(preprocess.mean, dtype=np.float32)
    std = np.asarray(preprocess.std, dtype=np.float32)
    tensor = torch.from_numpy(np.ascontiguousarray(((pixels - mean) / std).transpose(2, 0, 1)))
    return tensor, pixels


def image_files(path: str | Path) -> list[Path]:
    """The image files of ``path``: the file itself, or a folder's PNG/JPEG files sorted by name.

    Raises
    ------
    ValueError
        ``path`` does not exist, is not an image file, or is a folder without images.
    """
    given = Path(path)
    if given.is_dir():
        files = sorted(p for p in given.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"the folder {given} holds no {'/'.join(IMAGE_SUFFIXES)} images")
        return files
    if not given.exists():
        raise ValueError(f"inputs file not found: {given}")
    if given.suffix.lower() not in IMAGE_SUFFIXES:
        raise ValueError(f"{given.name} is not a {'/'.join(IMAGE_SUFFIXES)} image")
    return [given]


@dataclass
class LoadedImages:
    """Images read from files: the model's inputs and what to show.

    Attributes
    ----------
    inputs:
        ``(N, C, H, W)`` float32, preprocessed.
    display:
        ``(N, H, W, C)`` in ``[0, 1]``: the resized, cropped images before normalisation.
    names:
        The files' names, one per image.
    preprocess:
        The preprocessing applied.
    """

    inputs: torch.Tensor
    display: np.ndarray
    names: list[str]
    preprocess: Preprocess


def load_images(path: str | Path, preprocess: Preprocess | str = "none") -> LoadedImages:
    """Read an image file or a folder of PNG/JPEG files as one batch.

    Parameters
    ----------
    path:
        A ``.png``/``.jpg``/``.jpeg`` file or a folder of them (read in name order).
    preprocess:
        A :class:`Preprocess` or a preset's name (:data:`PRESETS`).

    Raises
    ------
    ValueError
        No images, an unreadable file (named), or images of different sizes after preprocessing
        (give ``resize`` and ``crop``).
    """
    steps = preset(preprocess) if isinstance(preprocess, str) else preprocess
    Image = _pillow()
    tensors: list[torch.Tensor] = []
    shown: list[np.ndarray] = []
    names: list[str] = []
    for file in image_files(path):
        try:
            with Image.open(file) as image:
                tensor, display = preprocess_image(image, steps)
        except ValueError as exc:
            raise ValueError(f"{file.name}: {exc}") from exc
        except OSError as exc:
            raise ValueError(f"could not read the image {file}: {exc}") from exc
        if tensors and tensor.shape != tensors[0].shape:
            raise ValueError(
                f"{file.name} is {tuple(tensor.shape[1:])} after preprocessing but {names[0]} is "
                f"{tuple(tensors[0].shape[1:])}: give a resize and crop (e.g. --preprocess torchvision) "
                "so that every image has one size"
            )
        tensors.append(tensor)
        shown.append(display)
        names.append(file.name)
    return LoadedImages(torch.stack(tensors), np.stack(shown), names, steps)
