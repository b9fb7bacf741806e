"""The design notes under ``docs/`` run as written, and ``docs/rules.md`` matches the rule registry.

Every ```` ```python ```` block of a page is executed, the page's blocks in order in one namespace
(later blocks use what earlier ones defined), so each page is one script; the blocks assert their
own values (hand-computed numbers).  ``docs/choosing-a-rule-and-a-reference.md`` is included:
``tests/test_examples.py`` runs ``examples/choosing_rule_and_reference.py`` and compares its
printout with the page, but not the page's own code block.

A page that registers rules globally (``deltalift.register_rule``) does so in a copy of the
default registry's table that is put back afterwards, so the other tests see the default rules.
"""

from __future__ import annotations

import operator
import re
from pathlib import Path
from typing import Any

import pytest
import torch

from deltalift import rules

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = [
    "engine.md",
    "rules.md",
    "adding-a-rule.md",
    "adding-a-method.md",
    "choosing-a-rule-and-a-reference.md",
]
BLOCK = re.compile(r"^```python\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
#: An op as the rules page writes it: ``aten.name``, ``aten.name.overload`` or ``operator.name``.
OP_NAME = re.compile(r"`((?:aten|operator)\.[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)?)`")
KIND_HEADING = re.compile(r"^### `([a-z_]+)`", re.MULTILINE)


def python_blocks(page: str) -> list[tuple[int, str]]:
    """``(line number of the block's first line, code)`` for every python block of ``page``."""
    text = (DOCS / page).read_text()
    return [(text.count("\n", 0, m.start(1)), m.group(1)) for m in BLOCK.finditer(text)]


@pytest.mark.parametrize("page", PAGES)
def test_page_has_python_blocks(page):
    assert python_blocks(page), f"docs/{page} has no python block"


@pytest.mark.parametrize("page", PAGES)
def test_page_runs_as_written(page, monkeypatch):
    monkeypatch.setattr(rules.default_registry, "_rules", dict(rules.default_registry._rules))
    namespace: dict[str, Any] = {"__name__": "docs_" + page.removesuffix(".md").replace("-", "_")}
    for line, code in python_blocks(page):
        # padded with newlines, so that a traceback names the page's own line numbers
        exec(compile("\n" * line + code, str(DOCS / page), "exec"), namespace)


def resolve(name: str) -> Any:
    """The op that the rules page writes as ``name`` (an overload packet, an overload, or an operator function)."""
    module, _, rest = name.partition(".")
    if module == "operator":
        return getattr(operator, rest)
    packet_name, _, overload = rest.partition(".")
    packet = getattr(torch.ops.aten, packet_name)
    return getattr(packet, overload) if overload else packet


def kind_sections() -> dict[str, list[str]]:
    """For each ``### `kind``` heading of docs/rules.md, the op names written under it (up to the next heading)."""
    text = (DOCS / "rules.md").read_text()
    headings = list(KIND_HEADING.finditer(text))
    sections = {}
    for i, heading in enumerate(headings):
        end = headings[i + 1].start() if i + 1 < len(headings) else len(text)
        following = text.find("\n#", heading.end())
        end = min(end, following) if following != -1 else end
        sections[heading.group(1)] = OP_NAME.findall(text[heading.end() : end])
    return sections


def test_rules_page_lists_every_kind():
    sections = kind_sections()
    assert set(sections) == set(rules.KINDS), "docs/rules.md needs one '### `kind`' section per kind in KINDS"
    text = (DOCS / "rules.md").read_text()
    for kind in rules.KINDS:
        assert f"| `{kind}` |" in text, f"the table of docs/rules.md has no row for {kind!r}"


def test_every_op_the_rules_page_names_has_that_kind():
    for kind, names in kind_sections().items():
        for name in names:
            op = resolve(name)
            assert rules.default_registry.kind(op) == kind, (
                f"docs/rules.md lists {name} under {kind!r}, the registry says {rules.default_registry.kind(op)!r}"
            )


def test_the_rules_page_names_every_registered_op():
    sections = kind_sections()
    for kind in rules.KINDS:
        named = {resolve(name) for name in sections.get(kind, [])}
        missing = [str(op) for op in rules.default_registry.ops(kind) if op not in named]
        assert not missing, f"docs/rules.md does not list these ops of kind {kind!r}: {', '.join(missing)}"


def test_every_aten_name_on_the_rules_page_is_an_op():
    for name in OP_NAME.findall((DOCS / "rules.md").read_text()):
        resolve(name)  # raises AttributeError for a misspelt op
