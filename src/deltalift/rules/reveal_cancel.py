"""The RevealCancel rule (Shrikumar et al. 2017, section 3.5.3; DESIGN.md section 1).

For an element-wise ``y = f(z)`` fed by a weighted linear op ``z = W x + b`` (dense or
convolution, optionally through a bias and a batch norm in eval mode, which are folded into
``W``), with ``dx+ = max(dx, 0)``, ``dx- = min(dx, 0)``, ``W+ = max(W, 0)``, ``W- = min(W, 0)``::

    dz+ = W+ dx+ + W- dx-            dz- = W+ dx- + W- dx+
    dy+ = 1/2 (f(z0 + dz+) - f(z0)) + 1/2 (f(z0 + dz- + dz+) - f(z0 + dz-))
    dy- = 1/2 (f(z0 + dz-) - f(z0)) + 1/2 (f(z0 + dz+ + dz-) - f(z0 + dz+))
    m+ = dy+ / dz+                   m- = dy- / dz-        (derivative at z0 where |dz+-| <= eps)

Back through the linear op, for an incoming multiplier ``g`` on ``y``: an input with ``dx > 0``
gets ``W+^T (g m+) + W-^T (g m-)``, one with ``dx < 0`` gets ``W-^T (g m+) + W+^T (g m-)``,
one with ``dx = 0`` gets ``1/2 W^T (g m+ + g m-)``.  Summation-to-delta holds exactly:
``g . (m+ dz+ + m- dz-) = g . (dy+ + dy-) = g . dy``.

The pattern (linear op -> optional bias / batch norm -> nonlinearity) is found in the captured
graph by :func:`find_weighted_input`; the engine then evaluates the nonlinearity with
:func:`reveal_cancel` from the linear op's own input.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.fx import Node

from deltalift.rules.registry import Pair
from deltalift.rules.rescale import derivative_where, secant_multiplier

Tensor = torch.Tensor
aten = torch.ops.aten
Linear = Callable[[Tensor, Tensor], Tensor]


@dataclass
class WeightedInput:
    """A nonlinearity's input ``z`` as a weighted linear op of ``source`` (plus constants).

    ``kind`` is ``"dense"`` (``addmm``/``mm``) or ``"conv"`` (``convolution``); ``linear`` the
    linear op's node; ``batch_norm`` the eval-mode batch norm node between, if any.
    """

    source: Node
    linear: Node
    batch_norm: Node | None
    kind: str


def _single_user(node: Node) -> bool:
    return len(node.users) == 1


def find_weighted_input(nonlinearity: Node, is_constant: Callable[[Any], bool]) -> WeightedInput | None:
    """Walk back from ``nonlinearity``'s first argument through bias additions and an eval-mode
    batch norm to a dense or convolution node whose weight is constant; ``None`` if the
    pattern does not hold (Rescale then applies)."""
    node = nonlinearity.args[0] if nonlinearity.args else None
    batch_norm = None
    while isinstance(node, Node) and _single_user(node):
        target = node.target
        if target is aten.add.Tensor and len(node.args) == 2 and is_constant(node.args[1]):
            node = node.args[0]
        elif target is operator.getitem and node.args[1] == 0 and isinstance(node.args[0], Node):
            parent = node.args[0]
            if parent.target is not aten._native_batch_norm_legit_no_training.default or batch_norm is not None:
                return None
            if not all(is_constant(a) for a in parent.args[1:5]):
                return None
            batch_norm, node = parent, parent.args[0]
        elif target is aten.convolution.default:
            transposed = node.args[6]
            ok = not transposed and is_constant(node.args[1]) and is_constant(node.args[2])
            return WeightedInput(node.args[0], node, batch_norm, "conv") if ok else None  # type: ignore[arg-type]
        elif target is aten.addmm.default and not node.kwargs:
            ok = is_constant(node.args[0]) and is_constant(node.args[2])
            return WeightedInput(node.args[1], node, batch_norm, "dense") if ok else None  # type: ignore[arg-type]
        elif target is aten.mm.default:
            return WeightedInput(node.args[0], node, batch_norm, "dense") if is_constant(node.args[1]) else None  # type: ignore[arg-type]
        else:
            return None
    return None


def linear_map(weighted: WeightedInput, values: Callable[[Node], Any]) -> tuple[Linear, Tensor]:
    """The bias-free linear map ``v -> W v`` as ``(apply(v, W), W)``, with a following batch
    norm's per-channel scale folded into ``W``."""
    node = weighted.linear
    if weighted.kind == "conv":
        weight = values(node.args[1])  # type: ignore[arg-type]
        rest = [values(a) if isinstance(a, Node) else a for a in node.args[3:]]

        def apply(v: Tensor, w: Tensor) -> Tensor:
            return aten.convolution.default(v, w, None, *rest)

        channel_shape: tuple[int, ...] = (-1,) + (1,) * (weight.ndim - 1)
    else:
        weight = values(node.args[2] if node.target is aten.addmm.default else node.args[1])  # type: ignore[arg-type]

        def apply(v: Tensor, w: Tensor) -> Tensor:
            return aten.mm.default(v, w)

        channel_shape = (1, -1)
    if weighted.batch_norm is not None:
        bn_args: list[Any] = [values(a) if isinstance(a, Node) else a for a in weighted.batch_norm.args]
        bn_weight, running_var, eps = bn_args[1], bn_args[4], bn_args[6]
        scale = torch.rsqrt(running_var + eps)
        if bn_weight is not None:
            scale = scale * bn_weight
        weight = weight * scale.reshape(channel_shape)
    return apply, weight


class _RevealCancel(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: Tensor,
        x0: Tensor,
        z: Tensor,
        z0: Tensor,
        f: Callable[[Tensor], Tensor],
        apply: Linear,
        weight: Tensor,
        eps: float,
    ) -> Tensor:
        w_pos, w_neg = weight.clamp(min=0), weight.clamp(max=0)
        dx = x - x0
        dx_pos, dx_neg = dx.clamp(min=0), dx.clamp(max=0)
        dz_pos = apply(dx_pos, w_pos) + apply(dx_neg, w_neg)
        dz_neg = apply(dx_neg, w_pos) + apply(dx_pos, w_neg)
        f_z0 = f(z0)
        y = f(z)
        shape = torch.broadcast_shapes(y.shape, z0.shape)
        dy_pos = 0.5 * (f(z0 + dz_pos) - f_z0) + 0.5 * (f(z0 + dz_neg + dz_pos) - f(z0 + dz_neg))
        dy_neg = 0.5 * (f(z0 + dz_neg) - f_z0) + 0.5 * (f(z0 + dz_pos + dz_neg) - f(z0 + dz_pos))

        derivative = derivative_where(f, [z0], 0, shape, pointwise=False)
        m_pos = secant_multiplier(dy_pos, dz_pos, eps, derivative)
        m_neg = secant_multiplier(dy_neg, dz_neg, eps, derivative)
        ctx.save_for_backward(dx, m_pos, m_neg, w_pos, w_neg)
        ctx.apply_fn = apply
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        dx, m_pos, m_neg, w_pos, w_neg = ctx.saved_tensors
        g_pos, g_neg = grad * m_pos, grad * m_neg
        with torch.enable_grad():
            probe = torch.zeros_like(dx, requires_grad=True)
            through_pos, through_neg = ctx.apply_fn(probe, w_pos), ctx.apply_fn(probe, w_neg)
            pos_pos = torch.autograd.grad(through_pos, probe, g_pos, retain_graph=True)[0]  # W+^T (g m+)
            pos_neg = torch.autograd.grad(through_pos, probe, g_neg)[0]  # W+^T (g m-)
            neg_pos = torch.autograd.grad(through_neg, probe, g_pos, retain_graph=True)[0]  # W-^T (g m+)
            neg_neg = torch.autograd.grad(through_neg, probe, g_neg)[0]  # W-^T (g m-)
        rising = pos_pos + neg_neg  # W+^T (g m+) + W-^T (g m-)
        falling = neg_pos + pos_neg  # W-^T (g m+) + W+^T (g m-)
        gx = torch.where(dx > 0, rising, torch.where(dx < 0, falling, 0.5 * (rising + falling)))
        return gx, None, None, None, None, None, None, None


def reveal_cancel(
    source: Pair, z: Pair, f: Callable[[Tensor], Tensor], apply: Linear, weight: Tensor, eps: float
) -> Pair:
    """The nonlinearity's output, whose backward sends RevealCancel multipliers to ``source``."""
    x0 = source.ref.expand_as(source.x) if source.ref.shape != source.x.shape else source.ref
    z0 = z.ref.expand_as(z.x) if z.ref.shape != z.x.shape else z.ref
    out = _RevealCancel.apply(source.x, x0.detach(), z.x.detach(), z0.detach(), f, apply, weight.detach(), eps)
    with torch.no_grad():
        ref = f(z.ref)
    return Pair(out, ref)
