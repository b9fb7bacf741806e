"""Figures of attributions: heatmaps beside the explained inputs.

matplotlib is imported only when a figure is drawn, so the core library does not need it
(install it with ``pip install deltalift[plot]``).
"""

from deltalift.plot.heatmap import attribution_map, plot_image_attributions

__all__ = ["attribution_map", "plot_image_attributions"]
