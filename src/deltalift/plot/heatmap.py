"""Attribution heatmaps beside the explained images.

Each row shows one input image and one or more attribution maps for it (e.g. for the predicted
class and for the runner-up).  Maps use a diverging colormap centred at zero: red where a pixel
raises the explained output relative to the reference, blue where it lowers it, white where it
contributes nothing.  The colour limits are symmetric, ``[-m, m]`` with ``m`` the largest
``|attribution|`` of that row, so the maps of one image share a scale and can be compared.

matplotlib is imported only when a figure is drawn; the figure is rendered with the Agg backend
through :class:`matplotlib.figure.Figure`, so pyplot's global state and the user's interactive
backend are left alone.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

ArrayLike = Any  # a numpy array or a torch tensor
Titles = Union[Sequence[str], Sequence[Sequence[str]]]

MISSING_MATPLOTLIB = (
    "deltalift.plot needs matplotlib, which is not installed. Install it with: pip install 'deltalift[plot]'"
)


def new_figure(width: float, height: float, layout: Literal["constrained"] | None = "constrained") -> Figure:
    """A matplotlib figure drawn by the Agg backend, without pyplot (``layout``: its layout
    engine, ``None`` for a figure laid out by ``tight_layout``)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(MISSING_MATPLOTLIB) from exc
    figure = Figure(figsize=(width, height), layout=layout)
    FigureCanvasAgg(figure)
    return figure


def to_numpy(value: ArrayLike) -> np.ndarray:
    """A float numpy copy of a numpy array or a torch tensor (detached, on the CPU)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().float().numpy()
    return np.asarray(value, dtype=np.float64)


def _channels_last(array: np.ndarray, what: str) -> np.ndarray:
    """``(N, H, W)`` or ``(N, H, W, C)`` from ``(N, H, W)``, ``(N, C, H, W)`` or ``(N, H, W, C)``."""
    if array.ndim == 3:
        return array
    if array.ndim == 4 and array.shape[1] in (1, 3):
        return np.moveaxis(array, 1, -1)
    if array.ndim == 4 and array.shape[-1] in (1, 3):
        return array
    raise ValueError(
        f"{what} has shape {array.shape}; expected a batch of images "
        "(N, H, W), (N, C, H, W) or (N, H, W, C) with C = 1 or 3"
    )


def attribution_map(attributions: ArrayLike) -> np.ndarray:
    """One value per pixel, ``(N, H, W)``: the attributions summed over the colour channels.

    Summing (rather than taking a norm) keeps the sign and the summation-to-delta property:
    the map of an example still adds up to ``t(x) - t(x0)``.
    """
    array = _channels_last(to_numpy(attributions), "attributions")
    return array.sum(axis=-1) if array.ndim == 4 else array


def image_for_display(images: ArrayLike) -> np.ndarray:
    """``(N, H, W)`` for grey images, ``(N, H, W, 3)`` scaled to ``[0, 1]`` per image for colour ones."""
    array = _channels_last(to_numpy(images), "images")
    if array.ndim == 3:
        return array
    if array.shape[-1] == 1:
        return array[..., 0]
    low = array.min(axis=(1, 2, 3), keepdims=True)
    high = array.max(axis=(1, 2, 3), keepdims=True)
    return (array - low) / np.where(high > low, high - low, 1.0)


def symmetric_limit(maps: Sequence[np.ndarray]) -> float:
    """``max |a|`` over the given maps (1.0 when they are all zero), for colour limits ``[-m, m]``."""
    limit = max(float(np.abs(m).max()) for m in maps)
    return limit if limit > 0 else 1.0


def _cell_titles(attribution_titles: Titles | None, n_rows: int, n_maps: int) -> list[list[str]]:
    """Per-row, per-map titles from ``None``, one title per map column, or one list per row."""
    if attribution_titles is None:
        return [[""] * n_maps for _ in range(n_rows)]
    given = list(attribution_titles)
    if all(isinstance(t, str) for t in given):
        if len(given) != n_maps:
            raise ValueError(f"got {len(given)} attribution titles for {n_maps} attribution maps per image")
        return [[str(t) for t in given] for _ in range(n_rows)]
    if len(given) != n_rows or any(len(row) != n_maps for row in given):
        raise ValueError(f"attribution_titles must be {n_maps} titles, or {n_rows} lists of {n_maps} titles")
    return [[str(t) for t in row] for row in given]


def _check_shapes(images: np.ndarray, maps: list[np.ndarray]) -> None:
    if len(images) == 0:
        raise ValueError("there are no images to plot")
    for k, m in enumerate(maps):
        if m.shape[:3] != images.shape[:3]:
            raise ValueError(
                f"attribution map {k} has shape {m.shape[:3]} but the images are {images.shape[:3]} (N, H, W)"
            )


def _frame(ax: Axes, title: str) -> None:
    """Title the panel; keep a thin grey frame (so an all-white map still shows its extent), no ticks."""
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor("0.7")
        spine.set_linewidth(0.6)


def _draw_image(ax: Axes, image: np.ndarray, title: str, cmap: str) -> None:
    ax.imshow(image, cmap=cmap if image.ndim == 2 else None, interpolation="nearest")
    _frame(ax, title)


def _draw_map(ax: Axes, values: np.ndarray, title: str, limit: float, cmap: str) -> Any:
    image = ax.imshow(values, cmap=cmap, vmin=-limit, vmax=limit, interpolation="nearest")
    _frame(ax, title)
    return image


def plot_image_attributions(
    images: ArrayLike,
    attributions: ArrayLike | Sequence[ArrayLike],
    titles: Sequence[str] | None = None,
    path: str | os.PathLike[str] | None = None,
    *,
    attribution_titles: Titles | None = None,
    title: str | None = None,
    cmap: str = "RdBu_r",
    image_cmap: str = "gray",
    panel_size: float = 1.8,
    dpi: int = 150,
) -> Figure:
    """Draw each image beside its attribution heatmap(s); write the figure to ``path`` if given.

    Parameters
    ----------
    images:
        A batch of images: ``(N, H, W)``, ``(N, C, H, W)`` or ``(N, H, W, C)`` with ``C`` 1 or 3
        (numpy array or torch tensor).  Colour images are scaled to ``[0, 1]`` for display.
    attributions:
        Attributions shaped like ``images`` (summed over channels for the map), or a list of such
        arrays to show several maps per image, one column each.
    titles:
        One title per image, shown above the image.
    path:
        Where to write the figure (format from the suffix, e.g. ``.png``); parent folders are
        created.
    attribution_titles:
        Titles of the maps: one per column, or one list per image.
    title:
        A title above the whole figure.
    cmap:
        A diverging colormap; the default ``"RdBu_r"`` is red for positive, blue for negative.
    image_cmap:
        Colormap of grey images (``"gray_r"`` shows dark ink on white).
    panel_size:
        Width and height of one panel, in inches.
    dpi:
        Resolution of the written file.

    Returns
    -------
    matplotlib.figure.Figure
        The figure (not registered with pyplot; display it in a notebook by evaluating it).
    """
    shown = image_for_display(images)
    arrays = list(attributions) if isinstance(attributions, (list, tuple)) else [attributions]
    maps = [attribution_map(a) for a in arrays]
    _check_shapes(shown, maps)
    n_rows, n_maps = len(shown), len(maps)
    if titles is not None and len(titles) != n_rows:
        raise ValueError(f"got {len(titles)} titles for {n_rows} images")
    cell_titles = _cell_titles(attribution_titles, n_rows, n_maps)
    figure = new_figure(panel_size * (n_maps + 1) + 0.6, (panel_size + 0.2) * n_rows + (0.4 if title else 0.0))
    if title:
        figure.suptitle(title, fontsize=10)
    axes = figure.subplots(n_rows, n_maps + 1, squeeze=False)
    for row in range(n_rows):
        _draw_image(axes[row, 0], shown[row], titles[row] if titles is not None else "", image_cmap)
        limit = symmetric_limit([m[row] for m in maps])
        drawn = [_draw_map(axes[row, 1 + k], maps[k][row], cell_titles[row][k], limit, cmap) for k in range(n_maps)]
        colorbar = figure.colorbar(drawn[-1], ax=axes[row, -1], shrink=0.85, pad=0.03)
        colorbar.ax.tick_params(labelsize=7)
    if path is not None:
        save_figure(figure, path, dpi)
    return figure


def save_figure(figure: Figure, path: str | os.PathLike[str], dpi: int = 150) -> Path:
    """Write ``figure`` to ``path`` (creating parent folders) and return the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, dpi=dpi)
    return target
