"""LRP rules: how relevance crosses one op of the captured graph, one short class per rule.

Layer-wise Relevance Propagation (Bach et al. 2015, "On pixel-wise explanations for non-linear
classifier decisions by layer-wise relevance propagation", PLoS ONE 10(7)) sends the output's
relevance back through the network, op by op, with a rule per op.  The rules for weighted linear
ops ``z = f(a; W, b)`` (convolutions, dense layers) are written as in Zennit (Anders et al. 2021,
arXiv:2106.13200): modify inputs and parameters, evaluate the op, and use its gradient to spread
``R_out / z_mod`` back (the "gradient trick"), ``R_in = sum_k a_k * (J_k^T (R_out / z_k))``.

Notation: ``a+ = max(a, 0)``, ``a- = min(a, 0)``; ``f+`` is the op with weights and bias clamped
to ``>= 0``, ``f-`` to ``<= 0``; ``f^0`` the same op without bias; ``stab(z) = z + eps * sign(z)``
with ``sign(0) = +1`` (Zennit's ``Stabilizer``).

The rules are applied by :mod:`deltalift.methods.lrp.walk`, whose backward pass carries relevance per
unit of activation (``R / a``), so that gradient x input is relevance.  Op *kinds* name the
families of ops a rule may be given to (see :data:`KINDS`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Union

import torch

from deltalift.canonical import WeightedOp

Tensor = torch.Tensor
Stabilizer = Union[float, Callable[[Tensor], Tensor]]

#: Op kinds of the captured graph.  ``conv``/``dense``: convolutions and dense layers (a constant
#: weight); ``pool``: average pooling and means; ``sum``: sums of activations (``a + b``, ``sum``);
#: ``batch_norm``: eval-mode batch norm not merged into a layer; ``activation``: element-wise
#: functions of one activation (ReLU, sigmoid, ...); ``max``: max pooling and other max-type ops;
#: ``linear``: other affine ops (reshapes, slicing, padding, scaling, adding constants);
#: ``product``: products of two activations (gates, attention); ``other``: the rest (softmax,
#: layer norm, ...).
KINDS = ("conv", "dense", "pool", "sum", "batch_norm", "activation", "max", "linear", "product", "other")
LAYER_KINDS = frozenset({"conv", "dense"})


def stabilize(z: Tensor, stabilizer: Stabilizer) -> Tensor:
    """``z + eps * sign(z)`` with ``sign(0) = +1`` (Zennit's ``stabilize``), or ``stabilizer(z)``."""
    if callable(stabilizer):
        return stabilizer(z)
    sign = (z == 0).to(z) + z.sign()
    return z + sign * stabilizer


def _check_stabilizer(value: Any, name: str) -> Stabilizer:
    if callable(value):
        return value  # type: ignore[no-any-return]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"{name} must be a number >= 0 or a callable z -> stabilised z, got {value!r}")
    return float(value)


def positive(t: Tensor) -> Tensor:
    return t.clamp(min=0)


def negative(t: Tensor) -> Tensor:
    return t.clamp(max=0)


class RelevanceRule:
    """Base of the LRP rules.  ``kinds``: the op kinds (:data:`KINDS`) the rule may be given to."""

    name: ClassVar[str] = ""
    kinds: ClassVar[frozenset[str]] = frozenset()

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({options})"


class Gradient(RelevanceRule):
    """The op's own gradient.  As relevance travels as ``R / a``, this is LRP-0 (the z-rule,
    ``R_i = sum_j a_i w_ij / z_j R_j``, Bach et al. 2015) on linear ops, with relevance absorbed
    by biases; on max pooling it gives all relevance to the arg-max (winner takes all)."""

    name = "gradient"
    kinds = frozenset(KINDS)


class Pass(RelevanceRule):
    """Relevance passes unchanged, ``R_in = R_out`` (Zennit's ``Pass``, its rule for activations
    and, without canonizers, for batch norm).  Carried as ``R / a``, it is ``g_in = g_out * y / x``;
    relevance on an input that is exactly zero cannot be carried and is dropped (only where
    ``f(0) != 0``, which is never the case for ReLU)."""

    name = "pass"
    kinds = frozenset({"activation", "batch_norm"})


class Uniform(RelevanceRule):
    """A product of two activations gives each factor half of its relevance, ``R_a = R_b = R / 2``
    (the uniform rule of AttnLRP, Achtibat et al. 2024, "AttnLRP: Attention-aware layer-wise
    relevance propagation for transformers", ICML).  For ``z = a * b`` and matrix products this is
    half the gradient."""

    name = "uniform"
    kinds = frozenset({"product"})


class LayerRule(RelevanceRule, ABC):
    """A rule for a weighted linear op.  ``direct`` rules give relevance that is not proportional
    to the op's input (Flat, WSquare, ZBox); they are meant for the input layer."""

    kinds = LAYER_KINDS
    direct: ClassVar[bool] = False

    @abstractmethod
    def relevance(self, layer: WeightedOp, a: Tensor, r: Tensor) -> Tensor:
        """The relevance of the op's input ``a`` given the relevance ``r`` of its output."""


class Epsilon(LayerRule):
    """LRP-epsilon (Bach et al. 2015; Montavon et al. 2019, "Layer-wise relevance propagation:
    an overview", LNCS 11700)::

        R_i = a_i * sum_j w_ij R_j / stab(z_j),   z = f(a; W, b)

    On ops without weights (pooling, sums, other affine ops) it is the same with ``f`` the op.
    ``epsilon`` may also be a callable ``z -> stabilised z``.  ``zero_params`` (``"bias"``,
    ``"weight"``) are set to zero in ``z``.
    """

    name = "epsilon"
    kinds = LAYER_KINDS | {"pool", "sum", "linear", "batch_norm"}

    def __init__(self, epsilon: Stabilizer = 1e-6, zero_params: Sequence[str] = ()) -> None:
        self.epsilon = _check_stabilizer(epsilon, "epsilon")
        self.zero_params = tuple(zero_params)

    def relevance(self, layer: WeightedOp, a: Tensor, r: Tensor) -> Tensor:
        plain = layer.modified(lambda p: p, self.zero_params)
        return a * plain.transpose(r / stabilize(plain(a), self.epsilon), a)

    def output_factor(self, z: Tensor) -> Tensor:
        """On an op without weights: ``R_j / stab(z_j)`` is ``g_j * z_j / stab(z_j)``."""
        return z / stabilize(z, self.epsilon)


class Norm(Epsilon):
    """Zennit's ``Norm``: LRP-epsilon with the stabilizer only, for average pooling and sums,
    ``R_i = a_i * sum_j (dz_j / da_i) R_j / stab(z_j)``."""

    name = "norm"

    def __init__(self, stabilizer: Stabilizer = 1e-6) -> None:
        super().__init__(stabilizer)


class ZPlus(LayerRule):
    """LRP-z+ (Montavon et al. 2017, "Explaining nonlinear classification decisions with deep
    Taylor decomposition", Pattern Recognition 65; Bach et al. 2015 with alpha=1, beta=0)::

        R_in = a+ * J+^T s + a- * J-^T s,   s = R_out / stab(f+(a+) + f-^0(a-))

    For ReLU networks (``a >= 0``) this is Deep Taylor's z+ rule, ``R_i = sum_j a_i w_ij+ / sum_i
    a_i w_ij+ R_j``.  As Zennit, the positive bias is kept in the denominator.
    """

    name = "zplus"

    def __init__(self, stabilizer: Stabilizer = 1e-6, zero_params: Sequence[str] = ()) -> None:
        self.stabilizer = _check_stabilizer(stabilizer, "stabilizer")
        self.zero_params = tuple(zero_params)

    def relevance(self, layer: WeightedOp, a: Tensor, r: Tensor) -> Tensor:
        up = layer.modified(positive, self.zero_params)
        down = layer.modified(negative, self.zero_params + ("bias",))
        a_up, a_down = positive(a), negative(a)
        s = r / stabilize(up(a_up) + down(a_down), self.stabilizer)
        return a_up * up.transpose(s, a) + a_down * down.transpose(s, a)


class AlphaBeta(LayerRule):
    """LRP-alpha-beta (Bach et al. 2015), ``alpha - beta = 1``::

        R_in = alpha * (a+ J+^T s+ + a- J-^T s+) - beta * (a+ J-^T s- + a- J+^T s-)
        s+ = R_out / stab(f+(a+) + f-^0(a-)),   s- = R_out / stab(f-(a+) + f+^0(a-))

    The positive and negative parts of each output are normalised separately; alpha=1, beta=0 is
    z+.  Common choices: (1, 0) and (2, 1).
    """

    name = "alpha_beta"

    def __init__(
        self, alpha: float = 2.0, beta: float = 1.0, stabilizer: Stabilizer = 1e-6, zero_params: Sequence[str] = ()
    ) -> None:
        if alpha < 0 or beta < 0:
            raise ValueError(f"alpha and beta must be >= 0, got alpha={alpha}, beta={beta}")
        if alpha - beta != 1:
            raise ValueError(f"alpha - beta must be 1 (relevance is conserved), got alpha={alpha}, beta={beta}")
        self.alpha = alpha
        self.beta = beta
        self.stabilizer = _check_stabilizer(stabilizer, "stabilizer")
        self.zero_params = tuple(zero_params)

    def relevance(self, layer: WeightedOp, a: Tensor, r: Tensor) -> Tensor:
        nobias = self.zero_params + ("bias",)
        up, down = layer.modified(positive, self.zero_params), layer.modified(negative, self.zero_params)
        up0, down0 = layer.modified(positive, nobias), layer.modified(negative, nobias)
        a_up, a_down = positive(a), negative(a)
        s_pos = r / stabilize(up(a_up) + down0(a_down), self.stabilizer)
        s_neg = r / stabilize(down(a_up) + up0(a_down), self.stabilizer)
        activating = a_up * up.transpose(s_pos, a) + a_down * down0.transpose(s_pos, a)
        inhibiting = a_up * down.transpose(s_neg, a) + a_down * up0.transpose(s_neg, a)
        return self.alpha * activating - self.beta * inhibiting


class Gamma(LayerRule):
    """LRP-gamma (Montavon et al. 2019), generalised to negative inputs and outputs as in Zennit:
    weights ``W + gamma * W+`` favour positive contributions::

        z > 0:  R_in = a+ J_{g+}^T s+ + a- J_{g-,0}^T s+,  s+ = R_out / stab(f_{g+}(a+) + f_{g-}^0(a-))
        z < 0:  R_in = a+ J_{g-}^T s- + a- J_{g+,0}^T s-,  s- = R_out / stab(f_{g-}(a+) + f_{g+}^0(a-))

    with ``f_{g+}`` the op with parameters ``p + gamma * p+`` and ``f_{g-}`` with ``p + gamma * p-``.
    """

    name = "gamma"

    def __init__(self, gamma: float = 0.25, stabilizer: Stabilizer = 1e-6, zero_params: Sequence[str] = ()) -> None:
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.gamma = gamma
        self.stabilizer = _check_stabilizer(stabilizer, "stabilizer")
        self.zero_params = tuple(zero_params)

    def relevance(self, layer: WeightedOp, a: Tensor, r: Tensor) -> Tensor:
        gamma, nobias = self.gamma, self.zero_params + ("bias",)
        up = layer.modified(lambda p: p + gamma * positive(p), self.zero_params)
        down = layer.modified(lambda p: p + gamma * negative(p), self.zero_params)
        up0 = layer.modified(lambda p: p + gamma * positive(p), nobias)
        down0 = layer.modified(lambda p: p + gamma * negative(p), nobias)
        a_up, a_down = positive(a), negative(a)
        z = layer(a)
        s_pos = (z > 0).to(r) * r / stabilize(up(a_up) + down0(a_down), self.stabilizer)
        s_neg = (z < 0).to(r) * r / stabilize(down(a_up) + up0(a_down), self.stabilizer)
        return (
            a_up * up.transpose(s_pos, a)
            + a_down * down0.transpose(s_pos, a)
            + a_up * down.transpose(s_neg, a)
            + a_down * up0.transpose(s_neg, a)
        )


class ZBox(LayerRule):
    """LRP-z^B for inputs bounded by ``low <= a <= high`` (Montavon et al. 2017)::

        R_in = a J^T s - low J+^T s - high J-^T s,   s = R_out / stab(f(a) - f+(low) - f-(high))

    ``low`` and ``high`` are numbers or tensors that broadcast to the layer's input (e.g. per
    channel, shape ``(1, C, 1, 1)``, for normalised images).
    """

    name = "zbox"
    direct = True

    def __init__(
        self, low: float | Tensor, high: float | Tensor, stabilizer: Stabilizer = 1e-6, zero_params: Sequence[str] = ()
    ) -> None:
        self.low = low
        self.high = high
        self.stabilizer = _check_stabilizer(stabilizer, "stabilizer")
        self.zero_params = tuple(zero_params)

    def relevance(self, layer: WeightedOp, a: Tensor, r: Tensor) -> Tensor:
        low = torch.as_tensor(self.low).to(a).expand_as(a)
        high = torch.as_tensor(self.high).to(a).expand_as(a)
        plain = layer.modified(lambda p: p, self.zero_params)
        up, down = layer.modified(positive, self.zero_params), layer.modified(negative, self.zero_params)
        s = r / stabilize(plain(a) - up(low) - down(high), self.stabilizer)
        return a * plain.transpose(s, a) - low * up.transpose(s, a) - high * down.transpose(s, a)


class Flat(LayerRule):
    """LRP-flat (Lapuschkin et al. 2019, "Unmasking Clever Hans predictors and assessing what
    machines really learn", Nature Communications 10): all weights one, no bias, input ones,
    ``R_i = sum_j R_j / sum_i' 1`` over each output's receptive field."""

    name = "flat"
    direct = True

    def __init__(self, stabilizer: Stabilizer = 1e-6) -> None:
        self.stabilizer = _check_stabilizer(stabilizer, "stabilizer")

    def relevance(self, layer: WeightedOp, a: Tensor, r: Tensor) -> Tensor:
        flat = layer.modified(torch.ones_like, ("bias",))
        return flat.transpose(r / stabilize(flat(torch.ones_like(a)), self.stabilizer), a)


class WSquare(LayerRule):
    """LRP-w^2 (Montavon et al. 2017), for unbounded inputs: ``R_i = sum_j w_ij^2 / sum_i' w_i'j^2
    R_j`` (parameters squared, bias included as Zennit, input ones)."""

    name = "wsquare"
    direct = True

    def __init__(self, stabilizer: Stabilizer = 1e-6, zero_params: Sequence[str] = ()) -> None:
        self.stabilizer = _check_stabilizer(stabilizer, "stabilizer")
        self.zero_params = tuple(zero_params)

    def relevance(self, layer: WeightedOp, a: Tensor, r: Tensor) -> Tensor:
        square = layer.modified(torch.square, self.zero_params)
        return square.transpose(r / stabilize(square(torch.ones_like(a)), self.stabilizer), a)


#: Rules that can be named by a string, with their default parameters.
RULE_NAMES: dict[str, Callable[[], RelevanceRule]] = {
    "epsilon": Epsilon,
    "norm": Norm,
    "zplus": ZPlus,
    "alpha1beta0": lambda: AlphaBeta(1.0, 0.0),
    "alpha2beta1": lambda: AlphaBeta(2.0, 1.0),
    "gamma": Gamma,
    "flat": Flat,
    "wsquare": WSquare,
    "pass": Pass,
    "gradient": Gradient,
    "uniform": Uniform,
}


def as_rule(rule: RelevanceRule | str) -> RelevanceRule:
    """A rule, or the rule named by a string (see :data:`RULE_NAMES`)."""
    if isinstance(rule, RelevanceRule):
        return rule
    if not isinstance(rule, str):
        raise TypeError(f"a rule must be an LRP rule or a rule name, got {type(rule).__name__}")
    if rule == "zbox":
        raise ValueError("the rule 'zbox' needs the input bounds: pass ZBox(low, high) instead of a name")
    if rule not in RULE_NAMES:
        raise ValueError(f"unknown LRP rule {rule!r}; known rule names: {', '.join(sorted(RULE_NAMES))}")
    return RULE_NAMES[rule]()
