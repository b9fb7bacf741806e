"""Self-contained HTML reports of :class:`deltalift.notebook.Explanation` (figures embedded as PNG)."""

from deltalift.report.html import PANEL_BORDER, render_fragment, render_report

__all__ = ["PANEL_BORDER", "render_fragment", "render_report"]
