"""deltalift.images: PNG/JPEG reading, resize, centre crop and normalisation, by hand and against
torchvision's and timm's own transforms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from deltalift.images import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PRESETS,
    Preprocess,
    from_timm_config,
    image_files,
    load_images,
    preprocess_image,
    preset,
    resized_size,
)

Image = pytest.importorskip("PIL.Image")


def write_png(path: Path, pixels: np.ndarray) -> Path:
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return path


def random_pixels(height: int, width: int, seed: int = 0, channels: int = 3) -> np.ndarray:
    shape = (height, width, channels) if channels > 1 else (height, width)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_no_preprocessing_is_pixels_over_255(tmp_path: Path) -> None:
    pixels = np.array([[[0, 51, 255], [102, 204, 1]], [[10, 20, 30], [40, 50, 60]]], dtype=np.uint8)
    loaded = load_images(write_png(tmp_path / "a.png", pixels), "none")
    assert loaded.inputs.shape == (1, 3, 2, 2) and loaded.inputs.dtype == torch.float32
    # channel 0 of the top-left pixel is 0/255, channel 2 is 255/255; channels first
    expected = torch.tensor(pixels.transpose(2, 0, 1) / 255.0, dtype=torch.float32)
    torch.testing.assert_close(loaded.inputs[0], expected, rtol=0, atol=1e-7)
    np.testing.assert_allclose(loaded.display[0], pixels / 255.0, atol=1e-7)
    assert loaded.names == ["a.png"]


def test_mean_std_normalisation_by_hand(tmp_path: Path) -> None:
    pixels = np.full((1, 1, 3), (255, 0, 51), dtype=np.uint8)
    steps = Preprocess(mean=(0.5, 0.25, 0.1), std=(0.5, 0.25, 0.2))
    loaded = load_images(write_png(tmp_path / "p.png", pixels), steps)
    # (1 - 0.5) / 0.5 = 1, (0 - 0.25) / 0.25 = -1, (0.2 - 0.1) / 0.2 = 0.5
    np.testing.assert_allclose(loaded.inputs[0, :, 0, 0].numpy(), [1.0, -1.0, 0.5], atol=1e-6)


@pytest.mark.parametrize(
    ("width", "height", "shorter", "expected"),
    [(40, 30, 20, (26, 20)), (30, 40, 20, (20, 26)), (10, 10, 7, (7, 7)), (3, 100, 6, (6, 200))],
)
def test_resize_keeps_the_ratio_as_torchvision(width: int, height: int, shorter: int, expected: tuple) -> None:
    # the longer side is int(shorter * long / short): int(20 * 40 / 30) = int(26.67) = 26
    assert resized_size(width, height, shorter) == expected


def test_centre_crop_offsets_by_hand() -> None:
    # a 5 x 4 (H x W) grey image whose pixel (i, j) is 10 i + j; a 2 x 2 crop starts at
    # top round((5 - 2) / 2) = round(1.5) = 2 (Python rounds half to even), left round(1) = 1
    pixels = np.array([[10 * i + j for j in range(4)] for i in range(5)], dtype=np.uint8)
    tensor, display = preprocess_image(
        Image.fromarray(pixels), Preprocess(crop=(2, 2), channels=1, mean=(0,), std=(1,))
    )
    expected = np.array([[21, 22], [31, 32]]) / 255.0
    np.testing.assert_allclose(tensor[0].numpy(), expected, atol=1e-7)
    np.testing.assert_allclose(display[..., 0], expected, atol=1e-7)


def test_grey_images_have_one_channel(tmp_path: Path) -> None:
    write_png(tmp_path / "g.png", random_pixels(6, 5, channels=3))
    loaded = load_images(tmp_path / "g.png", Preprocess(channels=1, mean=(0.5,), std=(0.5,)))
    assert loaded.inputs.shape == (1, 1, 6, 5)
    grey = np.asarray(Image.open(tmp_path / "g.png").convert("L"), dtype=np.float32) / 255.0
    np.testing.assert_allclose(loaded.inputs[0, 0].numpy(), (grey - 0.5) / 0.5, atol=1e-6)
    # three-channel mean/std given for grey images become their averages
    averaged = Preprocess(channels=1, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    assert averaged.mean == pytest.approx((sum(IMAGENET_MEAN) / 3,)) and len(averaged.std) == 1


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "nearest"])
def test_matches_torchvision_transforms(tmp_path: Path, interpolation: str) -> None:
    transforms = pytest.importorskip("torchvision.transforms")
    modes = transforms.InterpolationMode
    mode = {"bilinear": modes.BILINEAR, "bicubic": modes.BICUBIC, "nearest": modes.NEAREST}[interpolation]
    write_png(tmp_path / "x.png", random_pixels(27, 35, seed=3))
    pipeline = transforms.Compose(
        [
            transforms.Resize(20, interpolation=mode),
            transforms.CenterCrop(16),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    expected = pipeline(Image.open(tmp_path / "x.png").convert("RGB"))
    steps = Preprocess(20, 16, IMAGENET_MEAN, IMAGENET_STD, interpolation)
    torch.testing.assert_close(load_images(tmp_path / "x.png", steps).inputs[0], expected, rtol=0, atol=1e-5)


def test_torchvision_preset_is_the_imagenet_transform(tmp_path: Path) -> None:
    transforms = pytest.importorskip("torchvision.transforms")
    write_png(tmp_path / "x.png", random_pixels(240, 300, seed=4))
    pipeline = transforms.Compose(
        [
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    expected = pipeline(Image.open(tmp_path / "x.png").convert("RGB"))
    got = load_images(tmp_path / "x.png", "torchvision").inputs[0]
    assert got.shape == (3, 224, 224)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_timm_convention_matches_timm(tmp_path: Path) -> None:
    timm_data = pytest.importorskip("timm.data")
    write_png(tmp_path / "x.jpg", random_pixels(30, 41, seed=5))  # a JPEG this time
    image = Image.open(tmp_path / "x.jpg").convert("RGB")
    for args in (
        {"input_size": (3, 20, 20), "crop_pct": 0.8, "interpolation": "bilinear"},
        {"input_size": (3, 16, 16)},
    ):
        config = timm_data.resolve_data_config(args)
        expected = timm_data.create_transform(**config)(image)
        got = load_images(tmp_path / "x.jpg", from_timm_config(config)).inputs[0]
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    # the preset is resolve_data_config's default: 224, crop_pct 0.875 -> resize 256, bicubic
    defaults = from_timm_config(timm_data.resolve_data_config({"input_size": (3, 224, 224)}))
    assert preset("timm") == defaults
    assert (defaults.resize, defaults.crop, defaults.interpolation) == (256, (224, 224), "bicubic")


def test_folder_order_names_and_display(tmp_path: Path) -> None:
    for name, seed in (("b.png", 1), ("a.jpeg", 2), ("c.JPG", 3)):
        write_png(tmp_path / name, random_pixels(12, 10, seed))
    (tmp_path / "notes.txt").write_text("not an image")
    loaded = load_images(tmp_path, Preprocess(resize=8, crop=8))
    assert loaded.names == ["a.jpeg", "b.png", "c.JPG"]
    assert loaded.inputs.shape == (3, 3, 8, 8) and loaded.display.shape == (3, 8, 8, 3)
    # without normalisation the display image is the input, channels last
    np.testing.assert_allclose(loaded.display, loaded.inputs.numpy().transpose(0, 2, 3, 1), atol=1e-7)
    assert image_files(tmp_path / "b.png") == [tmp_path / "b.png"]


def test_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="holds no .png/.jpg/.jpeg images"):
        load_images(tmp_path)
    with pytest.raises(ValueError, match="inputs file not found"):
        load_images(tmp_path / "missing.png")
    write_png(tmp_path / "small.png", random_pixels(6, 6))
    write_png(tmp_path / "wide.png", random_pixels(6, 9))
    with pytest.raises(ValueError, match=r"wide.png is \(6, 9\) after preprocessing but small.png is \(6, 6\)"):
        load_images(tmp_path)
    with pytest.raises(ValueError, match="small.png: the image is 6x6 after resizing, smaller than the crop 8x8"):
        load_images(tmp_path / "small.png", Preprocess(crop=8))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="could not read the image"):
        load_images(tmp_path / "broken.png")
    with pytest.raises(ValueError, match="unknown preprocessing preset 'imagenet'"):
        preset("imagenet")
    with pytest.raises(ValueError, match="mean and std need 3 value"):
        Preprocess(mean=(0.5,), std=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="std must be positive"):
        Preprocess(std=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="crop must be a positive int"):
        Preprocess(crop=(0, 3))
    with pytest.raises(ValueError, match="only timm's crop_mode 'center'"):
        from_timm_config({"input_size": (3, 8, 8), "crop_mode": "squash"})
    assert set(PRESETS) == {"none", "torchvision", "timm"}
