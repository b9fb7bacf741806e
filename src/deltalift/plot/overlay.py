"""Attribution heatmaps laid over the image, side by side across methods.

A map ``a`` (the attributions summed over the colour channels, :func:`attribution_map`) is drawn
with a diverging colour scale centred at zero and symmetric, ``[-m, m]``: ``m = max |a|`` of
the panel (or the ``percentile``-th percentile of ``|a|``, values beyond it clipped).  The
colours are matplotlib's ``bwr``: blue ``(0, 0, 1)`` at ``-m``, white at 0, red ``(1, 0, 0)`` at
``+m``, linear in between.  The heat is blended over the image with an opacity that grows with
``|a|``, so that pixels contributing nothing show the photo as it is::

    s = clip(a / m, -1, 1),   alpha = strength * |s|,   pixel = (1 - alpha) * grey(image) + alpha * bwr(s)

with ``grey(image)`` the image's luma (ITU-R BT.601 weights), so that its own colours are not
mistaken for heat (``grey=False`` keeps them).

Each panel has its own ``m`` (methods differ in units and scale: gradients versus contributions),
printed as the colour bar's ends.  The blending is plain numpy (:func:`overlay`), so reports
need no matplotlib; :func:`plot_overlays` draws a matplotlib figure (``deltalift[plot]``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from deltalift.plot.heatmap import MISSING_MATPLOTLIB, attribution_map, save_figure, to_numpy

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["Mosaic", "diverging_colors", "display_image", "overlay", "overlay_mosaic", "panel_limit", "plot_overlays"]

ArrayLike = Any
#: The written figure's longer side at most, in pixels (the dpi is lowered for many panels).
MAX_PIXELS = 3000


def diverging_colors(scaled: np.ndarray) -> np.ndarray:
    """``bwr`` colours ``(..., 3)`` of values in ``[-1, 1]`` (clipped): blue, white at 0, red."""
    s = np.clip(np.asarray(scaled, dtype=np.float64), -1.0, 1.0)
    negative, positive = np.clip(-s, 0, 1), np.clip(s, 0, 1)
    red = 1.0 - negative
    green = 1.0 - np.abs(s)
    blue = 1.0 - positive
    return np.stack([red, green, blue], axis=-1)


def panel_limit(values: ArrayLike, percentile: float = 100.0) -> float:
    """``m`` of the symmetric scale ``[-m, m]``: the ``percentile``-th percentile of ``|values|``
    (100: the maximum); 1.0 for an all-zero map, so that it draws white.

    Raises
    ------
    ValueError
        ``percentile`` outside ``(0, 100]`` or values that are not finite.
    """
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    magnitudes = np.abs(to_numpy(values))
    if not np.isfinite(magnitudes).all():
        raise ValueError("the attributions contain NaN or infinite values")
    limit = float(np.percentile(magnitudes, percentile)) if magnitudes.size else 0.0
    return limit if limit > 0 else 1.0


def display_image(image: ArrayLike) -> np.ndarray:
    """One image as RGB ``(H, W, 3)`` in ``[0, 1]``: from ``(H, W)``, ``(1|3, H, W)`` or ``(H, W, 1|3)``;
    values outside ``[0, 1]`` are rescaled by the image's minimum and maximum."""
    array = to_numpy(image)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"an image must be (H, W), (C, H, W) or (H, W, C) with C 1 or 3, got {array.shape}")
    low, high = float(array.min()), float(array.max())
    if low < 0 or high > 1:
        array = (array - low) / (high - low if high > low else 1.0)
    return array


def overlay(
    image: ArrayLike, attributions: ArrayLike, limit: float | None = None, strength: float = 0.85, grey: bool = True
) -> np.ndarray:
    """The heatmap of ``attributions`` blended over ``image``: ``(H, W, 3)`` in ``[0, 1]``.

    Parameters
    ----------
    image:
        One image, as :func:`display_image` takes it.
    attributions:
        ``(H, W)``, or ``(C, H, W)`` summed over ``C``.
    limit:
        ``m`` of the scale ``[-m, m]``; default :func:`panel_limit` (``max |a|``).
    strength:
        Opacity of the heat where ``|a| >= m``, in ``[0, 1]``.
    grey:
        Draw the heat over the image's luma ``0.299 R + 0.587 G + 0.114 B`` (ITU-R BT.601), so that
        the photo's own colours cannot be mistaken for heat; ``False`` keeps its colours.
    """
    if not 0 <= strength <= 1:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    values = to_numpy(attributions)
    if values.ndim == 3:
        values = values.sum(axis=0)  # (C, H, W): summed over the channels
    shown = display_image(image)
    if values.shape != shown.shape[:2]:
        raise ValueError(f"the attribution map is {values.shape} but the image is {shown.shape[:2]}")
    if grey:
        luminance = shown @ np.array([0.299, 0.587, 0.114])  # ITU-R BT.601 luma
        shown = np.repeat(luminance[..., None], 3, axis=-1)
    m = panel_limit(values) if limit is None else float(limit)
    if not m > 0:
        raise ValueError(f"limit must be positive, got {limit}")
    scaled = np.clip(values / m, -1.0, 1.0)
    alpha = (strength * np.abs(scaled))[..., None]
    return (1.0 - alpha) * shown + alpha * diverging_colors(scaled)


@dataclass
class Mosaic:
    """The panels of :func:`plot_overlays` tiled into one RGB picture.

    Attributes
    ----------
    pixels:
        ``(rows * (band + H + gap), columns * (W + gap), 3)`` in ``[0, 1]``, white between panels.
    limits:
        ``(rows, columns - 1)``: each overlay's ``m``.
    band, gap:
        Pixel rows above each panel row (for the titles), and pixels between panels.
    height, width:
        One panel's size.
    """

    pixels: np.ndarray
    limits: np.ndarray
    band: int
    gap: int
    height: int
    width: int

    def panel(self, row: int, column: int) -> np.ndarray:
        """The pixels of one panel (column 0: the image)."""
        top = row * (self.band + self.height + self.gap) + self.band
        left = column * (self.width + self.gap)
        return self.pixels[top : top + self.height, left : left + self.width]

    def centre_above(self, row: int, column: int) -> tuple[float, float]:
        """``(x, y)`` in pixel coordinates of the middle of the title band above a panel."""
        x = column * (self.width + self.gap) + self.width / 2 - 0.5
        y = row * (self.band + self.height + self.gap) + self.band / 2 - 0.5
        return x, y


def overlay_mosaic(
    images: ArrayLike, maps: Sequence[np.ndarray], percentile: float = 100.0, strength: float = 0.85
) -> Mosaic:
    """Each image and its overlays (one per map ``(N, H, W)``), tiled row by row."""
    batch = [display_image(image) for image in to_numpy(images)]
    height, width = batch[0].shape[:2]
    band, gap = max(2, round(0.5 * height)), max(1, round(0.06 * width))
    rows, columns = len(batch), len(maps) + 1
    pixels = np.ones((rows * (band + height + gap), columns * (width + gap), 3))
    limits = np.zeros((rows, len(maps)))
    mosaic = Mosaic(pixels, limits, band, gap, height, width)
    for row, shown in enumerate(batch):
        mosaic.panel(row, 0)[...] = shown
        for k, values in enumerate(maps):
            limits[row, k] = panel_limit(values[row], percentile)
            mosaic.panel(row, k + 1)[...] = overlay(shown, values[row], limits[row, k], strength)
    return mosaic


def plot_overlays(
    images: ArrayLike,
    attributions: Mapping[str, ArrayLike],
    titles: Sequence[str] | None = None,
    path: str | os.PathLike[str] | None = None,
    *,
    title: str | None = None,
    percentile: float = 100.0,
    strength: float = 0.85,
    panel_size: float = 1.8,
    dpi: int = 150,
) -> Figure:
    """Each image, then its overlay for each method, one row per image; write to ``path`` if given.

    Parameters
    ----------
    images:
        ``(N, H, W)``, ``(N, C, H, W)`` or ``(N, H, W, C)`` with ``C`` 1 or 3.
    attributions:
        ``{method title: attributions (N, C', H, W) or (N, H, W)}``, the columns in this order.
    titles:
        One title per image (row).
    path:
        Where to write the figure.
    title:
        A title above the figure.
    percentile, strength:
        As :func:`panel_limit` and :func:`overlay`.

    Returns
    -------
    matplotlib.figure.Figure
        One picture (:func:`overlay_mosaic`) with each panel's title and ``m`` above it, and one
        colour bar below for the scale ``[-m, m]``.
    """
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    maps = {name: attribution_map(values) for name, values in attributions.items()}
    n_rows, n_maps = len(to_numpy(images)), len(maps)
    if n_rows == 0 or n_maps == 0:
        raise ValueError("there are no images or no attributions to plot")
    for name, values in maps.items():
        if len(values) != n_rows:
            raise ValueError(f"{name} has {len(values)} maps for {n_rows} images")
    if titles is not None and len(titles) != n_rows:
        raise ValueError(f"got {len(titles)} titles for {n_rows} images")
    mosaic = overlay_mosaic(images, list(maps.values()), percentile, strength)
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(MISSING_MATPLOTLIB) from exc
    # one picture and a text per panel: dozens of axes would cost seconds to lay out and draw
    grid_height, grid_width = mosaic.pixels.shape[:2]
    header, footer = (0.4 if title else 0.0), 0.45
    width = panel_size * (n_maps + 1)
    height = width * grid_height / grid_width + header + footer
    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    if title:
        figure.suptitle(title, fontsize=10, y=1 - 0.08 / height, va="top")
    ax = figure.add_axes((0.0, footer / height, 1.0, 1 - (header + footer) / height))
    ax.imshow(np.round(mosaic.pixels * 255).astype(np.uint8), interpolation="nearest", aspect="auto")
    ax.set_axis_off()
    names = list(maps)
    for row in range(n_rows):
        x, y = mosaic.centre_above(row, 0)
        ax.text(x, y, titles[row] if titles is not None else "", ha="center", va="center", fontsize=6)
        for k, name in enumerate(names):
            x, y = mosaic.centre_above(row, k + 1)
            label = f"{name}\nm = {mosaic.limits[row, k]:.2g}"
            ax.text(x, y, label, ha="center", va="center", fontsize=6, linespacing=1.0)
    scale = ScalarMappable(Normalize(-1.0, 1.0), "bwr")
    bar_axes = figure.add_axes((0.3, 0.22 / height, 0.4, 0.08 / height))
    bar = figure.colorbar(scale, cax=bar_axes, orientation="horizontal", ticks=[-1, 0, 1])
    bar.ax.set_xticklabels(["-m (lowers the output)", "0", "+m (raises it)"])
    bar.ax.tick_params(labelsize=7)
    if path is not None:
        save_figure(figure, path, min(dpi, int(MAX_PIXELS / max(width, height))))
    return figure
