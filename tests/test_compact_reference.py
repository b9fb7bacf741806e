"""A reference shared by the batch stays at batch size one through the graph, and gives the values
of the same reference repeated for every example.

The engine evaluates a shared reference once (Shrikumar et al. 2017 compute the reference
activations once per reference).  Real model code folds the batch into other dimensions:
``F.linear`` on a ``(n, L, E)`` activation views it as ``(n L, E)`` rows, multi-head attention
folds batch and heads into one dimension.  Shape queries give a Pair of sizes for such a
reference, views take their sizes per side, the reference's ``L`` rows then *tile* the input's
``n L`` rows through the dense layer (:func:`deltalift.rules.registry.tiles`), and where a view
folds the batch in another way the reference is expanded and taken back to batch size one by the
view that gives the batch its own dimension again.  Every test compares with the reference
repeated per example (float64, rounding level) and checks how often the reference was expanded.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import torchvision.models as tvm
from torch import nn

from deltalift import DeepLift, LayerDeepLift
from deltalift.rules.registry import Pair, aligned, pairs_in, tiles

DTYPE = torch.float64
linear_rule_module = sys.modules["deltalift.rules.linear"]
product_rule_module = sys.modules["deltalift.rules.product"]


@contextmanager
def expansions() -> Iterator[list[tuple[str, int]]]:
    """The ops whose reference side had to be evaluated at the input's batch size, with the
    number of elements of their largest input-side argument."""
    seen: list[tuple[str, int]] = []
    current: list[Any] = [None]
    evaluate_both = linear_rule_module.evaluate_both
    expanded = linear_rule_module._expanded_reference_side

    def tracking_evaluate(op: Any, args: Any, kwargs: Any) -> Any:
        current[0] = op
        return evaluate_both(op, args, kwargs)

    def tracking_expanded(tree: Any) -> Any:
        sizes = [p.x.numel() for p in pairs_in(tree) if isinstance(p.x, torch.Tensor)]
        seen.append((str(current[0]), max(sizes, default=0)))
        return expanded(tree)

    linear_rule_module.evaluate_both = tracking_evaluate
    linear_rule_module._expanded_reference_side = tracking_expanded
    try:
        yield seen
    finally:
        linear_rule_module.evaluate_both = evaluate_both
        linear_rule_module._expanded_reference_side = expanded


def shared_and_repeated(model: nn.Module, x: torch.Tensor, target: Any, method: Any = DeepLift, **kwargs: Any):
    """Attributions with one reference of batch size one, with it repeated, and the expansions."""
    g = torch.Generator().manual_seed(3)
    ref = torch.randn((1,) + x.shape[1:], generator=g, dtype=x.dtype)
    with expansions() as seen:
        a, delta = method(model, **kwargs).attribute(x, baselines=ref, target=target, return_convergence_delta=True)
    b, delta_b = method(model, **kwargs).attribute(
        x, baselines=ref.expand_as(x).clone(), target=target, return_convergence_delta=True
    )
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(delta, delta_b, rtol=0, atol=1e-10)
    if method is DeepLift:
        assert delta.abs().max() < 1e-10
    return seen


class TokenMLP(nn.Module):
    """A transformer's feed-forward block on tokens: LayerNorm, Linear, GELU, Linear, residual,
    then a mean over tokens and a head (every Linear sees a 3-D activation)."""

    def __init__(self, width: int = 6) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.up, self.down = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)
        self.head = nn.Linear(width, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x + self.down(F.gelu(self.up(self.norm(x))))
        return self.head(h.mean(1))


def built(module: nn.Module, *shape: int) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = module.to(DTYPE).eval()
    return model, torch.randn(*shape, dtype=DTYPE)


def test_dense_layers_on_tokens_keep_the_reference_at_batch_size_one():
    model, x = built(TokenMLP(), 4, 5, 6)
    assert shared_and_repeated(model, x, [0, 1, 2, 0]) == []


def test_a_layer_inside_the_tiled_rows_is_attributed_as_with_the_reference_repeated():
    model, x = built(TokenMLP(), 4, 5, 6)
    seen = shared_and_repeated(model, x, 1, LayerDeepLift, layer=model.up)
    assert seen == []


def test_attention_expands_the_reference_only_where_heads_fold_the_batch():
    """torchvision's ViT: the views of multi-head attention fold the batch into the heads (and
    token-major rows into the output projection), so the reference side is expanded at those
    views, and taken back to batch size one where the batch gets its own dimension again."""
    torch.manual_seed(0)
    model = tvm.VisionTransformer(32, 8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=10)
    model = model.to(DTYPE).eval()
    x = torch.randn(3, 3, 32, 32, dtype=DTYPE)
    products: list[tuple[int, int]] = []
    matrix_product = product_rule_module._matrix_product

    def tracking_product(op: Any, a: Pair, b: Pair) -> Pair:
        out = matrix_product(op, a, b)
        products.append((out.x.shape[0], out.ref.shape[0]))
        return out

    product_rule_module._matrix_product = tracking_product
    try:
        seen = shared_and_repeated(model, x, 4)
    finally:
        product_rule_module._matrix_product = matrix_product
    assert seen and {op for op, _ in seen} == {"aten.reshape.default"}  # captured views, evaluated as reshape
    # scores and their product with the values: batch times heads rows, the reference's heads alone
    assert products[: 2 * 2] == [(3 * 2, 2)] * 4


def test_convnext_blocks_keep_the_reference_at_batch_size_one():
    torch.manual_seed(0)
    model = tvm.convnext.ConvNeXt([tvm.convnext.CNBlockConfig(8, 16, 1), tvm.convnext.CNBlockConfig(16, None, 1)])
    model = model.to(DTYPE).eval()
    x = torch.randn(3, 3, 32, 32, dtype=DTYPE)
    seen = shared_and_repeated(model, x, 2)
    assert all(numel <= 3 * 16 for _, numel in seen)  # only the pooled features before the classifier


class IndexedByBatch(nn.Module):
    """Per-example pooling written with the batch size: ``h[arange(n), last]`` (as GPT-2's
    classification head picks each sequence's last token), and a constant expanded to the batch."""

    def __init__(self) -> None:
        super().__init__()
        self.token = nn.Parameter(torch.randn(1, 1, 6))
        self.proj = nn.Linear(6, 6)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        h = torch.cat([self.token.expand(n, -1, -1), torch.tanh(self.proj(x))], dim=1)
        last = torch.full((n,), h.shape[1] - 2, dtype=torch.long, device=x.device)
        return self.head(h[torch.arange(n, device=x.device), last])


def test_ops_given_the_batch_size_take_the_inputs_size_on_both_sides():
    model, x = built(IndexedByBatch(), 4, 5, 6)
    shared_and_repeated(model, x, [0, 2, 1, 0])


class BatchInner(nn.Module):
    """A view that folds the batch *inside* the rows (token-major ``(L n, E)``), a dense layer on
    them and the view back: the reference's rows do not tile the input's, so it is expanded."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(6, 6)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, width = x.shape
        tokens_first = x.transpose(0, 1).reshape(length * n, width)
        h = torch.relu(self.proj(tokens_first)).reshape(length, n, width).transpose(0, 1)
        return self.head(h.mean(1))


def test_a_batch_folded_inside_the_rows_is_expanded_not_tiled():
    model, x = built(BatchInner(), 4, 5, 6)
    seen = shared_and_repeated(model, x, 1)
    assert seen  # the token-major rows cannot be tiled


def test_tiles_and_aligned():
    ref = torch.arange(6.0).reshape(3, 2)
    x = torch.zeros(12, 2)
    assert tiles(x, ref) == 4
    assert torch.equal(aligned(Pair(x, ref)).ref, ref.repeat(4, 1))
    assert tiles(torch.zeros(4, 3, 2), torch.zeros(1, 3, 2)) == 4  # a batch-one reference tiles too
    assert tiles(torch.zeros(3, 4, 2), torch.zeros(3, 1, 2)) == 0  # broadcast in another dimension
    assert tiles(torch.zeros(10, 2), ref) == 0 and tiles(torch.zeros(3, 2), ref) == 0
    broadcast = Pair(torch.zeros(4, 2), torch.zeros(1, 2))
    assert aligned(broadcast) is broadcast


@pytest.mark.parametrize("rule", ["rescale", "reveal_cancel"])
def test_rules_on_tiled_rows(rule):
    """RevealCancel reads the dense layer's input rows (tiled) from the walk's values."""
    model, x = built(TokenMLP(), 3, 4, 6)
    shared_and_repeated(model, x, [0, 1, 2], rule=rule)


bmm, mm = torch.ops.aten.bmm.default, torch.ops.aten.mm.default


@pytest.mark.parametrize(
    ("op", "a_shapes", "b_shapes", "reference_rows"),
    [
        (bmm, ((6, 4, 3), (2, 4, 3)), ((6, 3, 5), (2, 3, 5)), 2),  # both tile: the product's reference tiles
        (bmm, ((6, 4, 3), (2, 4, 3)), ((6, 3, 5), (6, 3, 5)), 6),  # the first tiles
        (bmm, ((6, 4, 3), (6, 4, 3)), ((6, 3, 5), (2, 3, 5)), 6),  # the second tiles
        (bmm, ((6, 4, 3), (1, 4, 3)), ((6, 3, 5), (6, 3, 5)), 6),  # one broadcasts
        (bmm, ((6, 4, 3), (1, 4, 3)), ((6, 3, 5), (1, 3, 5)), 1),  # both broadcast
        (bmm, ((6, 4, 3), (2, 4, 3)), ((6, 3, 5), (1, 3, 5)), 6),  # one tiles, one broadcasts
        (mm, ((6, 3), (2, 3)), ((3, 5), (3, 5)), 2),  # the rows of a tile
    ],
)
def test_matrix_products_of_tiled_references(op, a_shapes, b_shapes, reference_rows):
    """The product of two activations whose references tile their rows has the values and
    multipliers of the references repeated (its reference output tiles where both factors' do)."""
    g = torch.Generator().manual_seed(0)
    a_x, a_ref, b_x, b_ref = (torch.randn(s, generator=g, dtype=DTYPE) for s in (*a_shapes, *b_shapes))
    grad = torch.randn(op(a_x, b_x).shape, generator=g, dtype=DTYPE)

    def run(a_ref: torch.Tensor, b_ref: torch.Tensor) -> tuple[torch.Tensor, ...]:
        a, b = a_x.clone().requires_grad_(True), b_x.clone().requires_grad_(True)
        out = product_rule_module._matrix_product(op, Pair(a, a_ref), Pair(b, b_ref))
        out.x.backward(grad)
        rows.append(out.ref.shape[0])
        return out.x, aligned(Pair(out.x, out.ref)).ref.expand_as(out.x), a.grad, b.grad

    def repeated(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        return ref.repeat(x.shape[0] // ref.shape[0], *[1] * (ref.ndim - 1))

    rows: list[int] = []
    compact, full = run(a_ref, b_ref), run(repeated(a_x, a_ref), repeated(b_x, b_ref))
    assert rows == [reference_rows, a_x.shape[0]]  # compact where both factors' references tile
    for got, want in zip(compact, full):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    a_mid = (a_x + repeated(a_x, a_ref)) / 2
    b_mid = (b_x + repeated(b_x, b_ref)) / 2
    torch.testing.assert_close(compact[2], grad @ b_mid.transpose(-1, -2))  # Shapley: m_a = . @ b_mid
    torch.testing.assert_close(compact[3], a_mid.transpose(-1, -2) @ grad)


class BatchedProducts(nn.Module):
    """``bmm`` of an activation and a constant: one matrix expanded over the batch (as ``F.linear``
    on a permuted activation decomposes) and one matrix per example, after a view that folds the
    batch into the rows."""

    def __init__(self, batch: int) -> None:
        super().__init__()
        self.shared = nn.Parameter(torch.randn(6, 6))
        self.register_buffer("per_example", torch.randn(batch * 5, 6, 4))
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, width = x.shape
        h = torch.tanh(torch.bmm(x, self.shared.expand(n, width, width)))
        rows = h.reshape(n * length, 1, width)
        g = torch.relu(torch.bmm(rows, self.per_example)).reshape(n, length, -1)
        return self.head(g.mean(1))


def test_products_of_an_activation_and_a_constant_with_a_shared_reference():
    torch.manual_seed(0)
    model, x = built(BatchedProducts(4), 4, 5, 6)
    shared_and_repeated(model, x, [0, 2, 1, 0])


def test_tiled_matrix_product_in_float32_agrees_with_float64():
    """The compact reference's product and Shapley multipliers in float32 are float64's to float32
    rounding (the midpoints are one addition and an exact halving per element)."""
    g = torch.Generator().manual_seed(1)
    a_x, a_ref = torch.randn(6, 4, 3, generator=g, dtype=DTYPE), torch.randn(2, 4, 3, generator=g, dtype=DTYPE)
    b_x, b_ref = torch.randn(6, 3, 5, generator=g, dtype=DTYPE), torch.randn(2, 3, 5, generator=g, dtype=DTYPE)
    grad = torch.randn(6, 4, 5, generator=g, dtype=DTYPE)

    def run(dtype: torch.dtype) -> list[torch.Tensor]:
        a, b = a_x.to(dtype).requires_grad_(True), b_x.to(dtype).requires_grad_(True)
        out = product_rule_module._matrix_product(bmm, Pair(a, a_ref.to(dtype)), Pair(b, b_ref.to(dtype)))
        out.x.backward(grad.to(dtype))
        return [out.x, out.ref, a.grad, b.grad]

    for single, double in zip(run(torch.float32), run(torch.float64)):
        torch.testing.assert_close(single.double(), double, rtol=1e-5, atol=1e-5)
