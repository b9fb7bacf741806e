"""Shared test helpers."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch


def relative_delta(delta: torch.Tensor, attributions: torch.Tensor, t: torch.Tensor, t0: torch.Tensor) -> torch.Tensor:
    """``|delta| / (|t| + |t0| + sum|C|)``: the convergence delta relative to the rounding scale."""
    scale = attributions.flatten(1).abs().sum(1) + t.abs() + t0.abs() + 1e-30
    return delta.abs() / scale


@pytest.fixture(autouse=True, scope="session")
def _capture_cache_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The disk capture cache of the test session lives in a temporary folder, never in the
    user's cache (subprocesses started by tests inherit it)."""
    before = os.environ.get("DELTALIFT_CACHE_DIR")
    os.environ["DELTALIFT_CACHE_DIR"] = str(tmp_path_factory.mktemp("deltalift-cache"))
    yield
    if before is None:
        os.environ.pop("DELTALIFT_CACHE_DIR", None)
    else:
        os.environ["DELTALIFT_CACHE_DIR"] = before
