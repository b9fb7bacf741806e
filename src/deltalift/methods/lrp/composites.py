"""LRP composites: which rule each op of the captured graph gets, kept apart from the rules.

As in Zennit (Anders et al. 2021, arXiv:2106.13200), a composite assigns rules by position and
type, never by editing the model.  deltalift works on the graph of ATen operations, so it assigns
by *op kind* (:data:`~deltalift.methods.lrp.rules.KINDS`: ``"conv"``, ``"dense"``, ``"pool"``,
...) instead of module type, and by module path or graph node name; functional calls
(``F.relu``) and modules used twice get the same rules as module-per-use models.

A rule is looked up in this order:

1. ``name_map``: the graph node's name, then its module path and the paths of the modules
   around it (``"features.3"``, then ``"features"``), entries in their order;
2. ``first_map``: for the *input layers* - weighted ops (conv, dense) that an explained input
   reaches without crossing another weighted op;
3. ``layer_map``: by op kind;
4. the base every composite shares (Zennit's ``layer_map_base``): activations ``Pass``, average
   pooling and sums ``Norm``, batch norm ``Pass`` (when not merged), max pooling and other
   affine ops their gradient (winner-takes-all and LRP-0), conv and dense layers LRP-0.

Products of two activations and ops of kind ``"other"`` (softmax, layer norm, ...) have no
default: give them a rule (``"uniform"``, ``"gradient"``) or attribution stops with an error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, Union

import torch

from deltalift.methods.lrp.rules import (
    KINDS,
    AlphaBeta,
    Epsilon,
    Flat,
    Gamma,
    Gradient,
    Norm,
    Pass,
    RelevanceRule,
    Stabilizer,
    ZBox,
    ZPlus,
    as_rule,
)

Names = Union[str, Sequence[str]]
#: ``[(kind or kinds, rule), ...]`` or ``{kind or kinds: rule}``; rules may be given by name.
KindMap = Union[Sequence[tuple[Names, Union[RelevanceRule, str]]], Mapping[Any, Union[RelevanceRule, str]]]
#: ``[(module path(s) or node name(s), rule), ...]`` or ``{path: rule}``.
NameMap = KindMap


def _entries(mapping: KindMap | None, what: str, check_kinds: bool) -> list[tuple[tuple[str, ...], RelevanceRule]]:
    if mapping is None:
        return []
    items: Iterable[Any] = mapping.items() if isinstance(mapping, Mapping) else mapping
    entries = []
    for item in items:
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise TypeError(f"{what} entries must be (names, rule) pairs, got {item!r}")
        names, rule = item
        names = (names,) if isinstance(names, str) else tuple(names)
        rule = as_rule(rule)
        if check_kinds:
            for kind in names:
                if kind not in KINDS:
                    raise ValueError(f"{what}: unknown op kind {kind!r}; op kinds: {', '.join(KINDS)}")
                if kind not in rule.kinds:
                    raise ValueError(
                        f"{what}: {type(rule).__name__} cannot be given to {kind!r} ops; it applies to "
                        f"{', '.join(k for k in KINDS if k in rule.kinds)}"
                    )
        entries.append((names, rule))
    return entries


def base_map(stabilizer: Stabilizer = 1e-6) -> list[tuple[tuple[str, ...], RelevanceRule]]:
    """The rules every composite shares, after its own (Zennit's ``layer_map_base``)."""
    return [
        (("activation",), Pass()),
        (("sum", "pool"), Norm(stabilizer)),
        (("batch_norm",), Pass()),
        (("max", "linear", "conv", "dense"), Gradient()),
    ]


class Composite:
    """Assigns an LRP rule to every op of the captured graph.

    Parameters
    ----------
    layer_map:
        Rules by op kind, e.g. ``{"conv": ZPlus(), "dense": "epsilon"}``.
    first_map:
        Rules by op kind for the input layers (e.g. ``{("conv", "dense"): Flat()}``).
    name_map:
        Rules by module path or graph node name, e.g. ``{"features.0": ZBox(0, 1)}``; a module's
        rule applies to those of its ops that the rule suits.  Wins over the other maps.
    stabilizer:
        Stabilizer of the base ``Norm`` rule for pooling and sums.
    merge_batch_norm:
        Merge an eval-mode batch norm that follows a convolution or dense layer into that layer
        before applying its rule (as Zennit's ``SequentialMergeBatchNorm`` canonizer); with
        ``False`` the batch norm gets its own rule (``Pass``, as Zennit without canonizers).
    """

    def __init__(
        self,
        layer_map: KindMap | None = None,
        first_map: KindMap | None = None,
        name_map: NameMap | None = None,
        stabilizer: Stabilizer = 1e-6,
        merge_batch_norm: bool = True,
    ) -> None:
        self.layer_map = _entries(layer_map, "layer_map", True) + base_map(stabilizer)
        self.first_map = _entries(first_map, "first_map", True)
        self.name_map = _entries(name_map, "name_map", False)
        self.merge_batch_norm = merge_batch_norm

    def rule(self, kind: str, names: Sequence[str], input_layer: bool) -> RelevanceRule | None:
        """The rule of an op of ``kind`` whose node name and module paths (innermost first) are
        ``names``; ``None`` where no map has one."""
        for name in names:
            for keys, rule in self.name_map:
                if name in keys and kind in rule.kinds:
                    return rule
        if input_layer:
            for kinds, rule in self.first_map:
                if kind in kinds:
                    return rule
        for kinds, rule in self.layer_map:
            if kind in kinds:
                return rule
        return None

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name_map={self.name_map}, first_map={self.first_map}, layer_map={self.layer_map})"
        )


class _ZennitComposite(Composite):
    """A composite named after one of Zennit's: its subclasses declare only their own rules, for the
    conv layers (:meth:`_conv_rule`; dense layers get LRP-epsilon) and for the input layers
    (:meth:`_input_rules`); the entries of ``layer_map`` and ``first_map`` come before them and win.

    Parameters
    ----------
    epsilon:
        Stabilizer of the LRP-epsilon rule of the dense layers.
    stabilizer:
        Stabilizer of the other rules and of the base ``Norm`` rule.
    layer_map, first_map, name_map, merge_batch_norm:
        As :class:`Composite`.
    zero_params:
        Parameters of the layers that their rules set to zero (e.g. ``["bias"]``).
    """

    #: whether the input layers (conv or dense) get the flat rule
    _flat_input_layers: ClassVar[bool] = False

    def __init__(
        self,
        epsilon: Stabilizer = 1e-6,
        stabilizer: Stabilizer = 1e-6,
        layer_map: KindMap | None = None,
        first_map: KindMap | None = None,
        name_map: NameMap | None = None,
        zero_params: Sequence[str] = (),
        merge_batch_norm: bool = True,
    ) -> None:
        own = self._layer_rules(epsilon, stabilizer, zero_params)
        first = self._input_rules(stabilizer, zero_params)
        super().__init__(_prepend(layer_map, own), _prepend(first_map, first), name_map, stabilizer, merge_batch_norm)

    def _layer_rules(self, epsilon: Stabilizer, stabilizer: Stabilizer, zero_params: Sequence[str]) -> list[Any]:
        """The composite's own rules by op kind: :meth:`_conv_rule` for conv layers, LRP-epsilon for
        dense layers."""
        return [("conv", self._conv_rule(stabilizer, zero_params)), ("dense", Epsilon(epsilon, zero_params))]

    def _conv_rule(self, stabilizer: Stabilizer, zero_params: Sequence[str]) -> RelevanceRule:
        """The conv layers' rule; each named composite gives its own (this private base is never
        used as a composite itself)."""
        raise NotImplementedError(f"{type(self).__name__} does not name its conv rule")

    def _input_rules(self, stabilizer: Stabilizer, zero_params: Sequence[str]) -> list[Any]:
        """The composite's own rules for the input layers: flat, or none (those of ``layer_map``)."""
        return [(("conv", "dense"), Flat(stabilizer))] if self._flat_input_layers else []


class EpsilonComposite(_ZennitComposite):
    """LRP-epsilon on every conv and dense layer (Captum's default LRP)."""

    def _layer_rules(self, epsilon: Stabilizer, stabilizer: Stabilizer, zero_params: Sequence[str]) -> list[Any]:
        return [(("conv", "dense"), Epsilon(epsilon, zero_params))]


class EpsilonPlus(_ZennitComposite):
    """Zennit's ``EpsilonPlus``: z+ for conv layers, epsilon for dense layers (Kohlbrenner et al.
    2020, "Towards best practice in explaining neural network decisions with LRP", IJCNN)."""

    def _conv_rule(self, stabilizer: Stabilizer, zero_params: Sequence[str]) -> RelevanceRule:
        return ZPlus(stabilizer, zero_params)


class EpsilonAlpha2Beta1(_ZennitComposite):
    """Zennit's ``EpsilonAlpha2Beta1``: alpha=2, beta=1 for conv layers, epsilon for dense layers."""

    def _conv_rule(self, stabilizer: Stabilizer, zero_params: Sequence[str]) -> RelevanceRule:
        return AlphaBeta(2.0, 1.0, stabilizer, zero_params)


class EpsilonPlusFlat(EpsilonPlus):
    """Zennit's ``EpsilonPlusFlat``: flat for the input layer (conv or dense), z+ for the other
    conv layers, epsilon for the other dense layers."""

    _flat_input_layers = True


class EpsilonAlpha2Beta1Flat(EpsilonAlpha2Beta1):
    """Zennit's ``EpsilonAlpha2Beta1Flat``: flat for the input layer, alpha=2, beta=1 for the other
    conv layers, epsilon for the other dense layers."""

    _flat_input_layers = True


class EpsilonGammaBox(_ZennitComposite):
    """Zennit's ``EpsilonGammaBox`` (Montavon et al. 2019's recommendation): z^B with bounds
    ``low``/``high`` for the input conv layer, gamma for the other conv layers, epsilon for dense
    layers."""

    def __init__(
        self,
        low: float | torch.Tensor,
        high: float | torch.Tensor,
        epsilon: Stabilizer = 1e-6,
        gamma: float = 0.25,
        stabilizer: Stabilizer = 1e-6,
        layer_map: KindMap | None = None,
        first_map: KindMap | None = None,
        name_map: NameMap | None = None,
        zero_params: Sequence[str] = (),
        merge_batch_norm: bool = True,
    ) -> None:
        self.low, self.high, self.gamma = low, high, gamma
        super().__init__(epsilon, stabilizer, layer_map, first_map, name_map, zero_params, merge_batch_norm)

    def _conv_rule(self, stabilizer: Stabilizer, zero_params: Sequence[str]) -> RelevanceRule:
        return Gamma(self.gamma, stabilizer, zero_params)

    def _input_rules(self, stabilizer: Stabilizer, zero_params: Sequence[str]) -> list[Any]:
        return [("conv", ZBox(self.low, self.high, stabilizer, zero_params))]


def _prepend(given: KindMap | None, own: list[Any]) -> list[Any]:
    """The user's entries first (they win), then the composite's own."""
    if given is None:
        return own
    return list(given.items() if isinstance(given, Mapping) else given) + own


#: Composites that can be named by a string (``LRP(model, "epsilon_plus_flat")``).
COMPOSITES: dict[str, Callable[[], Composite]] = {
    "epsilon": EpsilonComposite,
    "epsilon_plus": EpsilonPlus,
    "epsilon_alpha2_beta1": EpsilonAlpha2Beta1,
    "epsilon_plus_flat": EpsilonPlusFlat,
    "epsilon_alpha2_beta1_flat": EpsilonAlpha2Beta1Flat,
}


def as_composite(composite: Composite | str | None) -> Composite:
    """A composite, the composite named by a string, or LRP-epsilon for ``None``."""
    if composite is None:
        return EpsilonComposite()
    if isinstance(composite, Composite):
        return composite
    if not isinstance(composite, str):
        raise TypeError(f"composite must be a Composite or a composite name, got {type(composite).__name__}")
    if composite == "epsilon_gamma_box":
        raise ValueError("the composite 'epsilon_gamma_box' needs the input bounds: pass EpsilonGammaBox(low, high)")
    if composite not in COMPOSITES:
        raise ValueError(f"unknown LRP composite {composite!r}; known composites: {', '.join(sorted(COMPOSITES))}")
    return COMPOSITES[composite]()
