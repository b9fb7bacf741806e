"""The HTML report of an explanation: one self-contained file, every figure a base64 PNG.

Layout: a header (model, inputs, reference, preprocessing), a table of the methods (name,
settings, largest ``|delta|`` and what the delta measures), then one section per example: its
name, predicted class and target, and a row of panels - the input image, then one panel per
method with the heatmap over the image (:func:`deltalift.plot.overlay.overlay`, the scale
``[-m, m]`` centred at zero and symmetric, ``m`` printed under it) and the example's delta.
Inputs that are not images get a heat strip instead: the attributions as rows (channels) by
columns (positions), in the same colours.

Every panel has a border of the colour :data:`PANEL_BORDER`, so that a screenshot's panels can
be counted.  PNGs are written with Pillow; nothing is fetched when the page is opened.
"""

from __future__ import annotations

import base64
import html
import io
import json
from typing import TYPE_CHECKING, Any

import numpy as np

from deltalift.plot.overlay import diverging_colors, overlay, panel_limit

if TYPE_CHECKING:
    from deltalift.notebook import Explanation

__all__ = ["PANEL_BORDER", "png_data_uri", "render_fragment", "render_report"]

#: The border colour of every panel (input or method), ``#ff00ff``.
PANEL_BORDER = (255, 0, 255)
#: Side of a panel's picture on the page, in CSS pixels.
PANEL_PIXELS = 160

STYLE = f"""
.deltalift-report {{ font-family: system-ui, sans-serif; font-size: 13px; color: #222; background: #fff; }}
.deltalift-report h1 {{ font-size: 20px; margin: 8px 0; }}
.deltalift-report h2 {{ font-size: 15px; margin: 14px 0 6px; }}
.deltalift-report table {{ border-collapse: collapse; margin: 6px 0; }}
.deltalift-report td, .deltalift-report th {{ border: 1px solid #ccc; padding: 3px 6px; text-align: left;
  vertical-align: top; }}
.deltalift-report .row {{ display: flex; flex-wrap: wrap; gap: 10px; }}
.deltalift-report .panel {{ border: 4px solid rgb({PANEL_BORDER[0]}, {PANEL_BORDER[1]}, {PANEL_BORDER[2]}); padding: 4px; width: {PANEL_PIXELS}px; background: #fff; }}
.deltalift-report .panel img.map {{ width: {PANEL_PIXELS}px; height: auto; image-rendering: pixelated; display: block; }}
.deltalift-report .panel img.strip {{ height: 48px; }}
.deltalift-report .panel img.bar {{ width: {PANEL_PIXELS}px; height: 8px; display: block; margin-top: 3px; }}
.deltalift-report .caption {{ font-size: 11px; margin: 2px 0; overflow-wrap: anywhere; }}
.deltalift-report .scale {{ display: flex; justify-content: space-between; font-size: 10px; color: #555; }}
"""


def png_data_uri(rgb: np.ndarray) -> str:
    """``data:image/png;base64,...`` of an ``(H, W, 3)`` image with values in ``[0, 1]``."""
    from PIL import Image

    pixels = np.clip(np.round(np.asarray(rgb, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _colour_bar() -> str:
    ramp = np.linspace(-1.0, 1.0, 128)[None, :].repeat(8, axis=0)
    return png_data_uri(diverging_colors(ramp))


def _strip(values: np.ndarray) -> np.ndarray:
    """Attributions of one non-image example as rows by columns: ``(F,)`` -> ``(1, F)``,
    ``(C, L)`` as it is, more dimensions flattened into the rows."""
    if values.ndim == 1:
        return values[None, :]
    return values.reshape(-1, values.shape[-1])


def _picture(explanation: Explanation, method: str, index: int) -> tuple[str, float]:
    """The panel's PNG and its scale ``m``."""
    values = np.asarray(explanation.attributions[method][index], dtype=np.float64)
    limit = panel_limit(values)
    if explanation.display is not None:
        return png_data_uri(overlay(explanation.display[index], values, limit)), limit
    return png_data_uri(diverging_colors(_strip(values) / limit)), limit


def _settings_text(settings: dict[str, Any]) -> str:
    def text(value: Any) -> str:
        return value if isinstance(value, str) else json.dumps(value, default=str)

    return ", ".join(f"{key}={text(value)}" for key, value in settings.items()) or "(none)"


def _delta_text(explanation: Explanation, method: str, index: int) -> str:
    if method not in explanation.deltas:
        return "no convergence delta"
    return f"delta {float(explanation.deltas[method][index]):+.2e}"


def _method_panel(explanation: Explanation, method: str, index: int, bar: str) -> str:
    picture, limit = _picture(explanation, method, index)
    kind = "map" if explanation.display is not None else "map strip"
    title = html.escape(explanation.titles.get(method, method))
    return (
        f'<div class="panel method" data-method="{html.escape(method)}">'
        f'<div class="caption"><b>{title}</b></div>'
        f'<img class="{kind}" alt="{title}" src="{picture}">'
        f'<img class="bar" alt="colour scale" src="{bar}">'
        f'<div class="scale"><span>{-limit:.2g}</span><span>0</span><span>{limit:.2g}</span></div>'
        f'<div class="caption">{html.escape(_delta_text(explanation, method, index))}</div>'
        "</div>"
    )


def _input_panel(explanation: Explanation, index: int) -> str:
    if explanation.display is None:
        return ""
    picture = png_data_uri(_rgb(explanation.display[index]))
    name = html.escape(explanation.names[index])
    return f'<div class="panel input"><div class="caption"><b>input</b></div><img class="map" alt="{name}" src="{picture}"></div>'


def _rgb(image: np.ndarray) -> np.ndarray:
    array = np.asarray(image, dtype=np.float64)
    if array.ndim == 2:
        array = array[..., None]
    return np.repeat(array, 3, axis=-1) if array.shape[-1] == 1 else array


def _example_section(explanation: Explanation, index: int, bar: str) -> str:
    facts = []
    if explanation.predictions is not None:
        facts.append(f"predicted class {int(explanation.predictions[index])}")
    facts.append(
        f"target {int(explanation.targets[index])}" if explanation.targets is not None else "target: the output"
    )
    panels = _input_panel(explanation, index) + "".join(
        _method_panel(explanation, method, index, bar) for method in explanation.methods
    )
    name = html.escape(explanation.names[index])
    return (
        f'<section class="example"><h2>{name} &mdash; {html.escape(", ".join(facts))}</h2>'
        f'<div class="row">{panels}</div></section>'
    )


def _header(explanation: Explanation) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(key)}</th><td>{html.escape(json.dumps(value, default=str) if not isinstance(value, str) else value)}</td></tr>"
        for key, value in explanation.info.items()
    )
    methods = []
    for method in explanation.methods:
        largest = explanation.max_delta(method)
        delta = "&mdash;" if largest is None else f"{largest:.2e}"
        meaning = html.escape(explanation.delta_meanings.get(method, ""))
        methods.append(
            f"<tr><td>{html.escape(method)}</td><td>{html.escape(explanation.titles.get(method, method))}</td>"
            f"<td>{html.escape(_settings_text(explanation.settings.get(method, {})))}</td>"
            f"<td>{delta}</td><td>{meaning}</td></tr>"
        )
    return (
        "<h1>deltalift explanation</h1>"
        f"<table>{rows}</table>"
        "<table><tr><th>method</th><th>name</th><th>settings</th><th>max |delta|</th><th>delta</th></tr>"
        + "".join(methods)
        + "</table>"
        "<p>Red raises the explained output, blue lowers it; each panel has its own scale "
        "[-m, m], centred at zero.</p>"
    )


def render_fragment(explanation: Explanation, max_examples: int = 16) -> str:
    """The report as one ``<div>`` with its own style (what Jupyter shows)."""
    if max_examples < 0:
        raise ValueError(f"max_examples must be >= 0, got {max_examples}")
    bar = _colour_bar()
    shown = min(len(explanation.inputs), max_examples)
    sections = "".join(_example_section(explanation, i, bar) for i in range(shown))
    more = len(explanation.inputs) - shown
    note = f"<p>{more} more example(s) not shown; the arrays hold all of them.</p>" if more > 0 else ""
    return f'<div class="deltalift-report"><style>{STYLE}</style>{_header(explanation)}{sections}{note}</div>'


def render_report(explanation: Explanation, max_examples: int = 16) -> str:
    """The report as a complete HTML document, with nothing to fetch."""
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        "<title>deltalift explanation</title></head><body>"
        f"{render_fragment(explanation, max_examples)}</body></html>\n"
    )
