"""deltalift.report: the self-contained HTML report of an Explanation, its embedded pictures, its
facts per example and method, and its rendering in a real headless Chromium.

The Chromium helpers here are used by the command line's end-to-end test
(``tests/test_explain_cli_images.py``), which renders a report in a real headless Chromium.
Chromium comes from the Debian packages (``apt-get install -y chromium``); without it that test
skips.
"""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from deltalift.notebook import Explanation
from deltalift.plot.overlay import diverging_colors, overlay, panel_limit
from deltalift.report import PANEL_BORDER, render_fragment, render_report

Image = pytest.importorskip("PIL.Image")

CHROMIUM_NAMES = ("chromium", "chromium-headless-shell", "chromium-browser", "google-chrome")


def chromium_binary() -> str | None:
    """The first Chromium found on the PATH (or None)."""
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def screenshot(html: Path, png: Path, width: int = 1600, height: int = 3000) -> np.ndarray:
    """Render ``html`` in headless Chromium at ``width`` x ``height`` and return the screenshot's RGB pixels."""
    binary = chromium_binary()
    if binary is None:
        pytest.skip("no Chromium binary (apt-get install -y chromium)")
    profile = png.parent / "chromium-profile"
    command = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        f"--user-data-dir={profile}",
        f"--screenshot={png}",
        f"--window-size={width},{height}",
        html.resolve().as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert png.exists(), f"Chromium wrote no screenshot (exit {done.returncode}): {done.stderr[-2000:]}"
    return np.asarray(Image.open(png).convert("RGB"))


def count_panels(pixels: np.ndarray, min_pixels: int = 300) -> int:
    """Connected regions of exactly the panel border's colour (each panel's frame is one), ignoring specks."""
    ndimage = pytest.importorskip("scipy.ndimage")
    mask = np.all(pixels == np.array(PANEL_BORDER), axis=-1)
    labels, _ = ndimage.label(mask)
    sizes = np.bincount(labels.ravel())[1:]
    return int((sizes >= min_pixels).sum())


def small_explanation(images: bool = True) -> Explanation:
    """Two examples, two methods (one with deltas), written by hand."""
    rng = np.random.default_rng(0)
    shape = (2, 3, 6, 6) if images else (2, 4, 10)
    inputs = rng.random(shape)
    return Explanation(
        inputs=inputs,
        attributions={"deeplift": rng.normal(size=shape), "saliency": np.abs(rng.normal(size=shape))},
        deltas={"deeplift": np.array([1.5e-7, -2.5e-7])},
        targets=np.array([1, 0]),
        predictions=np.array([1, 2]),
        names=["cat.png", "dog<1>.png"],
        titles={"deeplift": "DeepLIFT", "saliency": "Saliency"},
        settings={"deeplift": {"reference": "zero", "rule": "rescale"}, "saliency": {"abs": True}},
        delta_meanings={"deeplift": "sum of attributions - (t(x) - t(x0))"},
        display=inputs.transpose(0, 2, 3, 1) if images else None,
        info={"model": "Tiny", "inputs": "folder"},
    )


def decode(uri: str) -> np.ndarray:
    assert uri.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB"))


def test_report_holds_every_fact_and_nothing_to_fetch() -> None:
    explanation = small_explanation()
    html = render_report(explanation)
    assert html.startswith("<!DOCTYPE html>")
    assert html.count('class="panel input"') == 2 and html.count('class="panel method"') == 4
    assert "predicted class 1, target 1" in html and "predicted class 2, target 0" in html
    assert "delta +1.50e-07" in html and "delta -2.50e-07" in html
    assert html.count("no convergence delta") == 2  # saliency has none, for both examples
    assert "reference=zero, rule=rescale" in html and "abs=true" in html
    assert "2.50e-07" in html  # the largest |delta| in the methods' table
    assert "dog&lt;1&gt;.png" in html and "dog<1>" not in html  # names are escaped
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", html)  # self-contained


def test_embedded_pictures_are_the_overlays() -> None:
    explanation = small_explanation()
    html = render_report(explanation)
    uris = re.findall(r'<img class="map" alt="[^"]*" src="(data:image/png;base64,[^"]+)"', html)
    assert len(uris) == 6  # per example: the input, then DeepLIFT, Saliency
    # the DeepLIFT panel of example 1 is the overlay of its channel-summed map on its scale [-m, m]
    values = explanation.attributions["deeplift"][1]
    expected = overlay(explanation.display[1], values, panel_limit(values))
    np.testing.assert_array_equal(decode(uris[4]), np.round(expected * 255).astype(np.uint8))
    np.testing.assert_array_equal(decode(uris[3]), np.round(explanation.display[1] * 255).astype(np.uint8))
    m = panel_limit(values)
    assert f"<span>{-m:.2g}</span><span>0</span><span>{m:.2g}</span>" in html  # the scale is symmetric


def test_sequence_inputs_get_heat_strips() -> None:
    explanation = small_explanation(images=False)
    html = render_report(explanation)
    assert 'class="panel input"' not in html and html.count('class="panel method"') == 4
    uris = re.findall(r'<img class="map strip" alt="[^"]*" src="(data:image/png;base64,[^"]+)"', html)
    values = explanation.attributions["saliency"][0]  # (4, 10): channels by positions
    expected = diverging_colors(values / panel_limit(values))
    np.testing.assert_array_equal(decode(uris[1]), np.round(expected * 255).astype(np.uint8))


def test_fragment_limits_examples_and_renders_in_jupyter() -> None:
    explanation = small_explanation()
    fragment = render_fragment(explanation, max_examples=1)
    assert fragment.startswith('<div class="deltalift-report">') and "<html" not in fragment
    assert fragment.count('class="panel method"') == 2
    assert "1 more example(s) not shown" in fragment
    assert explanation._repr_html_().count('class="panel method"') == 4
    with pytest.raises(ValueError, match="max_examples must be >= 0"):
        render_fragment(explanation, max_examples=-1)


def test_panel_counter_counts_frames() -> None:
    pixels = np.full((60, 100, 3), 255, dtype=np.uint8)
    for left in (2, 36, 70):  # three 4-pixel frames of the border colour, 28 x 40
        pixels[5:45, left : left + 28] = PANEL_BORDER
        pixels[9:41, left + 4 : left + 24] = (10, 200, 30)
    pixels[50, 50] = PANEL_BORDER  # a speck of the same colour is not a panel
    assert count_panels(pixels, min_pixels=100) == 3
    pixels[5:45, 30:36] = PANEL_BORDER  # two frames touching are one region
    assert count_panels(pixels, min_pixels=100) == 2
