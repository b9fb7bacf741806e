"""The graph canonicalizer: weighted ops (dense, convolution) of the captured graph, as rules see them.

Zennit keeps its *canonizers* (model surgery such as merging batch norm into the layer before
it) apart from its rules; deltalift does the same on the captured ATen graph, without touching
the model.  Three things live here, shared by RevealCancel, LRP and the engine's batching:

- :class:`WeightedOp`: a dense or convolution op with its evaluated weight and bias, with
  ``z = op(a)`` and its transpose ``J^T s`` (computed without a forward pass);
- :meth:`WeightedOp.fold_batch_norm`: an eval-mode batch norm after the op folded into it
  (Zennit's ``MergeBatchNorm``; the DeepLIFT walk folds where :func:`batch_norm_folding_pays`,
  :func:`with_batch_norm_folded`)::

      scale = gamma / sqrt(var + eps),   W' = W * scale,   b' = (b - mean) * scale + beta

- :func:`find_weighted_input`: the pattern *weighted op -> optional bias / batch norm ->
  nonlinearity* that RevealCancel needs (Shrikumar et al. 2017, section 3.5.3);
- :func:`find_scale_factor`: the pattern *activation times a reciprocal (square root)*, the
  normalisation of RMS and layer norms written out in model code, whose product gets the scale
  split (:func:`deltalift.rules.product.scale_product`).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch.fx import Node

from deltalift.errors import UnsupportedOperationError

Tensor = torch.Tensor
aten = torch.ops.aten


@dataclass(frozen=True)
class WeightedOp:
    """A weighted linear op ``z = function(a, weight, bias)`` of the captured graph.

    ``kind`` is ``"dense"`` or ``"conv"``; ``channel_dim`` the weight dimension of the output
    channels (where a following batch norm's scale applies), ``None`` where a batch norm cannot
    be folded in.  ``backward``, where given, computes ``J^T s`` as ``backward(s, shape, weight)``
    from the activation's shape alone (so the activation need not be kept for it).
    """

    kind: str
    weight: Tensor
    bias: Tensor | None
    function: Callable[[Tensor, Tensor, Tensor | None], Tensor]
    channel_dim: int | None = 0
    backward: Callable[[Tensor, Sequence[int], Tensor], Tensor] | None = None

    def __call__(self, a: Tensor) -> Tensor:
        return self.function(a, self.weight, self.bias)

    def with_weight(self, weight: Tensor, bias: Tensor | None = None) -> WeightedOp:
        """The same op with other parameters (no bias unless given)."""
        return replace(self, weight=weight, bias=bias)

    def modified(self, modifier: Callable[[Tensor], Tensor], zero: Sequence[str] = ()) -> WeightedOp:
        """The op with ``modifier`` applied to weight and bias; the parameters named in ``zero``
        (``"weight"``, ``"bias"``) are set to zero instead (Zennit's ``ParamMod``)."""

        def modify(name: str, value: Tensor) -> Tensor:
            return torch.zeros_like(value) if name in zero else modifier(value)

        bias = None if self.bias is None else modify("bias", self.bias)
        return replace(self, weight=modify("weight", self.weight), bias=bias)

    def transpose(self, s: Tensor, like: Tensor) -> Tensor:
        """``J^T s``: the gradient of ``<s, f(a)>`` with respect to ``a`` (the op is linear in ``a``)."""
        if self.backward is not None:
            return self.transpose_to(s, like.shape)
        a = torch.zeros_like(like).requires_grad_(True)
        with torch.enable_grad():
            z = self(a)
        (grad,) = torch.autograd.grad(z, a, s)
        return grad

    def transpose_to(self, s: Tensor, shape: Sequence[int]) -> Tensor:
        """``J^T s`` from the activation's shape alone (ops with a ``backward``), so that the
        activation need not be kept for it."""
        assert self.backward is not None
        return self.backward(s, shape, self.weight)

    def fold_batch_norm(
        self, gamma: Tensor | None, beta: Tensor | None, mean: Tensor, var: Tensor, eps: float
    ) -> WeightedOp:
        """This op followed by an eval-mode batch norm, as one op::

        scale = gamma / sqrt(var + eps),   W' = W * scale,   b' = (b - mean) * scale + beta
        """
        if self.channel_dim is None:
            raise UnsupportedOperationError("cannot fold a batch norm into this op (grouped transposed convolution)")
        scale = (var + eps).rsqrt() if gamma is None else gamma / (var + eps).sqrt()
        shape = [1] * self.weight.ndim
        shape[self.channel_dim] = -1
        b = torch.zeros_like(mean) if self.bias is None else self.bias
        new_bias = (b - mean) * scale + (0.0 if beta is None else beta)
        return replace(self, weight=self.weight * scale.reshape(shape), bias=new_bias)


def weighted_op(
    op: Any, args: Sequence[Any], position: int, convolution: Callable[..., Tensor] = aten.convolution
) -> WeightedOp | None:
    """``op`` (``convolution``, ``addmm`` or ``mm``, with evaluated ``args``) as a
    :class:`WeightedOp` whose activation is ``args[position]``; ``None`` for other ops.
    ``convolution``: what evaluates a convolution and its transpose (``aten.convolution``'s
    signature; the DeepLIFT walk passes :func:`deltalift.conv_layout.convolution`)."""
    packet = getattr(op, "overloadpacket", None)
    if packet is aten.convolution and position == 0:
        stride, padding, dilation, transposed, output_padding, groups = args[3:9]

        def conv(a: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
            return convolution(a, w, b, stride, padding, dilation, transposed, output_padding, groups)

        def conv_backward(s: Tensor, shape: Sequence[int], w: Tensor) -> Tensor:
            """The input gradient from the input's shape: the transposed convolution, whose
            output padding restores the sizes a strided convolution rounded down (a
            convolution for a transposed one); the values of ``convolution_backward``."""
            n = s.ndim - 2
            st, pad, dil = (_per_dimension(v, n) for v in (stride, padding, dilation))
            if transposed:
                return convolution(s, w, None, st, pad, dil, False, [0] * n, groups)
            restored = [
                shape[2 + i] - ((s.shape[2 + i] - 1) * st[i] - 2 * pad[i] + dil[i] * (w.shape[2 + i] - 1) + 1)
                for i in range(n)
            ]
            return convolution(s, w, None, st, pad, dil, True, restored, groups)

        channel_dim = (1 if groups == 1 else None) if transposed else 0
        return WeightedOp("conv", args[1], args[2], conv, channel_dim, conv_backward)
    if packet is aten.addmm and position == 1:
        return WeightedOp("dense", args[2], args[0], _dense, 1, _dense_backward)
    if packet is aten.mm and position == 0:
        return WeightedOp("dense", args[1], None, _dense, 1, _dense_backward)
    if packet is aten.mm and position == 1:
        return WeightedOp(
            "dense", args[0], None, lambda a, w, b: aten.mm(w, a), None, lambda s, shape, w: aten.mm(w.t(), s)
        )
    return None


def _per_dimension(value: Sequence[int], n: int) -> list[int]:
    return list(value) * n if len(value) == 1 else list(value)


def _dense(a: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
    return aten.mm(a, w) if b is None else aten.addmm(b, a, w)


def _dense_backward(s: Tensor, shape: Sequence[int], w: Tensor) -> Tensor:
    return aten.mm(s, w.t())


def batch_norm_folding_pays(x: Any, conv_args: Sequence[Any]) -> bool:
    """Whether folding a batch norm into a convolution of ``x`` costs less than the batch norm:
    the fold makes a new weight (a pass over the weight, into fresh memory) where the batch norm
    makes passes over the output (forward on both sides, backward).  Folded where the output
    (estimated from the input, the channels and the strides) is at least twice the weight."""
    weight = conv_args[1]
    if not isinstance(x, Tensor) or x.ndim < 3 or not isinstance(weight, Tensor):
        return False
    stride = math.prod(conv_args[3]) if len(conv_args) > 3 else 1
    transposed = len(conv_args) > 6 and conv_args[6]
    out_channels = weight.shape[1] * conv_args[8] if transposed else weight.shape[0]
    output = x.numel() // x.shape[1] * out_channels
    output = output * stride if transposed else output // max(stride, 1)
    return output >= FOLDING_OUTPUT_RATIO * weight.numel()


#: How many times the weight a convolution's output must be for its batch norm to be folded in.
FOLDING_OUTPUT_RATIO = 2


def with_batch_norm_folded(conv_args: Sequence[Any], norm_args: Sequence[Any]) -> tuple[Any, ...]:
    """A convolution's arguments with the eval-mode batch norm after it folded into its weight
    and bias (``norm_args``: the batch norm's weight, bias, running mean and variance, momentum, eps)."""
    folded = weighted_op(aten.convolution.default, conv_args, 0)
    assert folded is not None
    gamma, beta, mean, var, _, eps = norm_args
    folded = folded.fold_batch_norm(gamma, beta, mean, var, eps)
    return (conv_args[0], folded.weight, folded.bias, *conv_args[3:])


@dataclass
class WeightedInput:
    """A nonlinearity's input ``z`` as a weighted op of ``source`` (plus constants).

    ``kind`` is ``"dense"`` (``addmm``/``mm``) or ``"conv"`` (``convolution``); ``linear`` the
    weighted op's node; ``batch_norm`` the eval-mode batch norm node between, if any; ``path`` every
    node from the weighted op to the nonlinearity's input (a layer tapped there must see its
    multipliers, so RevealCancel does not apply across it).
    """

    source: Node
    linear: Node
    batch_norm: Node | None
    kind: str
    path: tuple[Node, ...] = ()  #: the nodes from the weighted op to the nonlinearity's input

    def nodes_used(self) -> list[Node]:
        """The graph values the op needs: its input, weights and batch norm statistics."""
        keep = [self.source] + [a for a in self.linear.args if isinstance(a, Node)]
        if self.batch_norm is not None:
            keep += [a for a in self.batch_norm.args if isinstance(a, Node)]
        return keep

    def op(self, values: Callable[[Node], Any]) -> WeightedOp:
        """The weighted op with its evaluated arguments, a batch norm between folded in."""
        position = 1 if self.linear.target is aten.addmm.default else 0
        args: list[Any] = [values(a) if isinstance(a, Node) else a for a in self.linear.args]
        weighted = weighted_op(self.linear.target, args, position)
        assert weighted is not None  # find_weighted_input only matches weighted ops
        if self.batch_norm is not None:
            bn: list[Any] = [values(a) if isinstance(a, Node) else a for a in self.batch_norm.args]
            weighted = weighted.fold_batch_norm(bn[1], bn[2], bn[3], bn[4], bn[6])
        return weighted


#: Ops whose output is a normalising scale of their input: a product with it is a normalisation.
SCALE_OPS = (aten.rsqrt, aten.reciprocal)


def find_scale_factor(product: Node, is_layout: Callable[[Node], bool]) -> int | None:
    """The position (0 or 1) of the factor of ``product`` (an element-wise multiplication) that
    is a normalising scale: the output of ``rsqrt`` or ``reciprocal``, possibly through layout
    ops (views, expansions, dtype conversions), as in RMS norm's ``x * rsqrt(mean(x^2) + eps)``;
    ``None`` if neither is."""
    for position in (1, 0):
        node = product.args[position] if len(product.args) > position else None
        while isinstance(node, Node) and is_layout(node) and node.args and isinstance(node.args[0], Node):
            node = node.args[0]
        if isinstance(node, Node) and getattr(node.target, "overloadpacket", None) in SCALE_OPS:
            return position
    return None


#: Reshapes that keep the elements' order, through which the pattern may pass (the nonlinearity
#: then sees the weighted op's output in another shape).
_RESHAPES = (aten.view.default, aten._unsafe_view.default, aten.reshape.default)


def find_weighted_input(nonlinearity: Node, is_constant: Callable[[Any], bool]) -> WeightedInput | None:
    """Walk back from ``nonlinearity``'s first argument through bias additions, reshapes and an
    eval-mode batch norm to a dense or convolution node whose weight is constant; ``None`` if
    the pattern does not hold (Rescale then applies)."""
    node = nonlinearity.args[0] if nonlinearity.args else None
    batch_norm = None
    path: list[Node] = []
    while isinstance(node, Node) and len(node.users) == 1:
        path.append(node)
        target = node.target
        if target is aten.add.Tensor and len(node.args) == 2 and is_constant(node.args[1]):
            node = node.args[0]
        elif target in _RESHAPES and batch_norm is None:  # F.linear on 3-D inputs: view -> addmm -> view
            node = node.args[0]
        elif target is operator.getitem and node.args[1] == 0 and isinstance(node.args[0], Node):
            parent = node.args[0]
            if parent.target is not aten._native_batch_norm_legit_no_training.default or batch_norm is not None:
                return None
            if not all(is_constant(a) for a in parent.args[1:5]):
                return None
            path.append(parent)
            batch_norm, node = parent, parent.args[0]
        elif target is aten.convolution.default:
            transposed = node.args[6]
            ok = not transposed and is_constant(node.args[1]) and is_constant(node.args[2])
            return WeightedInput(node.args[0], node, batch_norm, "conv", tuple(path)) if ok else None  # type: ignore[arg-type]
        elif target is aten.addmm.default and not node.kwargs:
            ok = is_constant(node.args[0]) and is_constant(node.args[2])
            return WeightedInput(node.args[1], node, batch_norm, "dense", tuple(path)) if ok else None  # type: ignore[arg-type]
        elif target is aten.mm.default:
            ok = is_constant(node.args[1])
            return WeightedInput(node.args[0], node, batch_norm, "dense", tuple(path)) if ok else None  # type: ignore[arg-type]
        else:
            return None
    return None
