"""docs/concepts.md runs as written: its python blocks in order, in one namespace."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

PAGE = Path(__file__).resolve().parents[1] / "docs" / "concepts.md"
BLOCK = re.compile(r"^```python\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)


def test_concepts_page_runs_as_written() -> None:
    text = PAGE.read_text()
    blocks = [(text.count("\n", 0, m.start(1)), m.group(1)) for m in BLOCK.finditer(text)]
    assert len(blocks) == 3
    namespace: dict[str, Any] = {"__name__": "docs_concepts"}
    for line, code in blocks:
        exec(compile("\n" * line + code, str(PAGE), "exec"), namespace)
