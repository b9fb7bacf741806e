"""deltalift.plot.overlay: the symmetric colour scale centred at zero, the blending over the image,
and the side-by-side figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deltalift.plot.overlay import display_image, diverging_colors, overlay, overlay_mosaic, panel_limit, plot_overlays

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_colours_are_matplotlibs_bwr() -> None:
    matplotlib = pytest.importorskip("matplotlib")
    # bwr maps [0, 1] through a lookup table; resampled finely it is the linear segments themselves
    bwr = matplotlib.colormaps["bwr"].resampled(2**16 + 1)
    values = np.linspace(-1, 1, 41)
    expected = bwr((values + 1) / 2)[:, :3]  # ours maps [-1, 1] with 0 in the middle
    np.testing.assert_allclose(diverging_colors(values), expected, atol=1e-4)
    # the ends and the centre exactly
    np.testing.assert_array_equal(diverging_colors(np.array([-1.0, 0.0, 1.0])), [[0, 0, 1], [1, 1, 1], [1, 0, 0]])
    # clipped beyond the ends
    np.testing.assert_array_equal(diverging_colors(np.array([-7.0, 3.0])), [[0, 0, 1], [1, 0, 0]])


def test_symmetric_limit() -> None:
    values = np.array([[0.5, -2.0], [1.0, 0.25]])
    assert panel_limit(values) == 2.0  # max |a|, from the negative side
    assert panel_limit(-values) == 2.0
    assert panel_limit(np.zeros((3, 3))) == 1.0  # draws white, no division by zero
    # the 50th percentile of |a| = (0.5, 2, 1, 0.25) is (0.5 + 1) / 2
    assert panel_limit(values, percentile=50) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="percentile must be in"):
        panel_limit(values, percentile=0)
    with pytest.raises(ValueError, match="NaN or infinite"):
        panel_limit(np.array([1.0, np.nan]))


def test_overlay_blends_by_hand() -> None:
    image = np.full((2, 2, 3), 0.5)
    attributions = np.array([[0.0, 2.0], [-2.0, 1.0]])
    s = 0.8
    out = overlay(image, attributions, strength=s)  # m = max |a| = 2
    np.testing.assert_allclose(out[0, 0], [0.5, 0.5, 0.5])  # no contribution: the photo as it is
    np.testing.assert_allclose(out[0, 1], (1 - s) * 0.5 + s * np.array([1, 0, 0]))  # +m: red at full strength
    np.testing.assert_allclose(out[1, 0], (1 - s) * 0.5 + s * np.array([0, 0, 1]))  # -m: blue
    # a / m = 0.5: alpha = 0.4, colour bwr(0.5) = (1, 0.5, 0.5)
    np.testing.assert_allclose(out[1, 1], 0.6 * 0.5 + 0.4 * np.array([1, 0.5, 0.5]))
    # symmetric: negating the map swaps red and blue of the heat, the image being grey
    flipped = overlay(image, -attributions, strength=s)
    np.testing.assert_allclose(flipped[..., 0], out[..., 2])
    np.testing.assert_allclose(flipped[..., 1], out[..., 1])


def test_overlay_limit_channels_and_clipping() -> None:
    image = np.zeros((1, 3))  # grey (H, W)
    attributions = np.array([[[1.0, 0.0, -3.0]], [[1.0, 0.0, -3.0]]])  # (C=2, H, W): summed to (2, 0, -6)
    out = overlay(image, attributions, limit=4.0, strength=1.0)
    np.testing.assert_allclose(out[0, 0], [0.5 * 1.0, 0.5 * 0.5, 0.5 * 0.5])  # 2/4 = 0.5
    np.testing.assert_allclose(out[0, 1], [0.0, 0.0, 0.0])
    np.testing.assert_allclose(out[0, 2], [0.0, 0.0, 1.0])  # -6/4 clipped to -1
    with pytest.raises(ValueError, match=r"the attribution map is \(1, 2\) but the image is \(1, 3\)"):
        overlay(image, np.zeros((1, 2)))
    with pytest.raises(ValueError, match="strength must be in"):
        overlay(image, np.zeros((1, 3)), strength=1.5)


def test_display_image_layouts() -> None:
    chw = np.random.default_rng(0).random((3, 4, 5))
    np.testing.assert_allclose(display_image(chw), chw.transpose(1, 2, 0))
    grey = np.array([[0.0, 0.5], [1.0, 0.25]])
    np.testing.assert_allclose(display_image(grey), np.repeat(grey[..., None], 3, -1))
    np.testing.assert_allclose(display_image(grey[None]), display_image(grey))
    # normalised inputs (outside [0, 1]) are rescaled by their range
    np.testing.assert_allclose(display_image(np.array([[-2.0, 2.0]]))[0, :, 0], [0.0, 1.0])
    with pytest.raises(ValueError, match="an image must be"):
        display_image(np.zeros((2, 3, 4, 5)))


def test_heat_goes_over_the_luma() -> None:
    image = np.zeros((1, 2, 3))
    image[0, 0] = (1.0, 0.0, 0.0)  # a red pixel: luma 0.299
    image[0, 1] = (0.0, 0.0, 1.0)  # a blue pixel: luma 0.114
    out = overlay(image, np.array([[0.0, 1.0]]), strength=0.5)
    np.testing.assert_allclose(out[0, 0], [0.299] * 3)  # no heat: grey, not mistaken for heat
    np.testing.assert_allclose(out[0, 1], 0.5 * 0.114 + 0.5 * np.array([1.0, 0.0, 0.0]))
    np.testing.assert_allclose(overlay(image, np.zeros((1, 2)), grey=False), image)  # the photo's colours


def test_mosaic_tiles_the_overlays() -> None:
    rng = np.random.default_rng(2)
    images = rng.random((2, 5, 4, 3))
    maps = [rng.normal(size=(2, 5, 4)), rng.normal(size=(2, 5, 4))]
    mosaic = overlay_mosaic(images, maps)
    assert mosaic.pixels.shape == (2 * (mosaic.band + 5 + mosaic.gap), 3 * (4 + mosaic.gap), 3)
    np.testing.assert_allclose(mosaic.panel(1, 0), images[1])
    np.testing.assert_allclose(mosaic.panel(0, 2), overlay(images[0], maps[1][0]))
    assert mosaic.limits[1, 0] == np.abs(maps[0][1]).max()
    # between panels and in the title bands: white
    assert (mosaic.pixels[: mosaic.band] == 1).all() and (mosaic.pixels[:, 4 : 4 + mosaic.gap] == 1).all()


def test_plot_overlays_writes_a_figure(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    rng = np.random.default_rng(1)
    images = rng.random((2, 3, 8, 8))
    maps = {"DeepLIFT": rng.normal(size=(2, 3, 8, 8)), "Grad-CAM": rng.normal(size=(2, 1, 8, 8))}
    figure = plot_overlays(images, maps, ["a", "b"], tmp_path / "f.png", title="t")
    assert (tmp_path / "f.png").read_bytes()[:8] == PNG_SIGNATURE
    picture, bar = figure.axes  # one picture of every panel, one colour bar
    mosaic = overlay_mosaic(images, [maps["DeepLIFT"].sum(1), maps["Grad-CAM"][:, 0]])
    np.testing.assert_array_equal(picture.get_images()[0].get_array(), np.round(mosaic.pixels * 255).astype(np.uint8))
    texts = [t.get_text() for t in picture.texts]
    limit = panel_limit(maps["DeepLIFT"][0].sum(0))
    assert texts[:3] == ["a", f"DeepLIFT\nm = {limit:.2g}", f"Grad-CAM\nm = {mosaic.limits[0, 1]:.2g}"]
    assert [t.get_text() for t in bar.get_xticklabels()] == ["-m (lowers the output)", "0", "+m (raises it)"]
    with pytest.raises(ValueError, match="has 1 maps for 2 images"):
        plot_overlays(images, {"x": maps["DeepLIFT"][:1]})
    with pytest.raises(ValueError, match="got 1 titles for 2 images"):
        plot_overlays(images, maps, ["a"])
