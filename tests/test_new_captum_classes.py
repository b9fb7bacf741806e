"""LayerIntegratedGradients, GradientShap, LayerDeepLiftShap, NeuronDeepLiftShap,
NeuronGuidedBackprop, NeuronDeconvolution, LayerActivation and LayerGradientXActivation against
Captum's classes (float64), and each on a functional or reused-module twin of its model.

Captum is right on models built from ``nn.Module`` nonlinearities used once (its hooks see only
those), so parity is checked there; on the twins (``F.relu``/``torch.tanh`` instead of modules, or
one module called twice and chosen by graph node name) deltalift must give the module version's
value.  Tolerances: ``rtol=1e-9`` where Captum computes in float64; ``1e-7`` for the path
integrals, whose quadrature weights Captum multiplies in float32.  GradientShap draws its random
numbers as Captum does, so the same seeds give the same values.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

captum_attr = pytest.importorskip("captum.attr")

from deltalift.methods.gradient_shap import GradientShap  # noqa: E402
from deltalift.methods.integrated_gradients import IntegratedGradients  # noqa: E402
from deltalift.methods.layer_attribution import (  # noqa: E402
    LayerActivation,
    LayerGradientXActivation,
    LayerIntegratedGradients,
)
from deltalift.methods.layer_deeplift_shap import LayerDeepLiftShap, NeuronDeepLiftShap  # noqa: E402
from deltalift.methods.neuron_guided import NeuronDeconvolution, NeuronGuidedBackprop  # noqa: E402

DTYPE = torch.float64
EXACT = 1e-9  # Captum in float64
QUADRATURE = 1e-7  # Captum's float32 quadrature weights
EPS = 1e-10  # Captum's DeepLIFT threshold


def _quiet(fn: Any, *args: Any, **kwargs: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def _close(ours: Any, theirs: Any, rtol: float) -> None:
    """Equal within ``rtol``, elements near zero judged against the largest value."""
    pairs = zip(ours, theirs) if isinstance(ours, tuple) else [(ours, theirs)]
    for a, b in pairs:
        a, b = a.detach(), b.detach()
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * float(b.abs().max()) + 1e-300)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, dtype=DTYPE, generator=_gen(seed))


def _seeded(module: nn.Module, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    for p in module.parameters():
        nn.init.normal_(p, std=0.6)
    return module.to(DTYPE).eval()


# --------------------------------------------------------------------------------------------------
# models


class Text(nn.Module):
    """Embedding, mean over the sequence, linear: the NLP pattern."""

    def __init__(self, vocabulary: int = 30, width: int = 8, classes: int = 3) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocabulary, width, padding_idx=0)
        self.fc = nn.Linear(width, classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fc(self.embedding(ids).mean(1))


class FunctionalText(nn.Module):
    """:class:`Text` with ``F.embedding`` on a parameter: the layer is a graph node, no module."""

    def __init__(self, text: Text) -> None:
        super().__init__()
        self.weight = nn.Parameter(text.embedding.weight.detach().clone())
        self.fc = text.fc

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fc(F.embedding(ids, self.weight).mean(1))


class FlatText(nn.Module):
    """Embedding, flattened with the batch size read from the ids, tanh, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(30, 4)
        self.fc = nn.Linear(6 * 4, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.tanh(self.embedding(ids).reshape(ids.shape[0], -1)))


class Pair(nn.Module):
    """Query and document through their own embeddings (shared=False) or one embedding called
    twice (shared=True, chosen by graph node name)."""

    def __init__(self, shared: bool) -> None:
        super().__init__()
        self.shared = shared
        self.embedding = nn.Embedding(30, 5)
        self.doc_embedding = nn.Embedding(30, 5)
        self.fc = nn.Linear(10, 2)

    def forward(self, query: torch.Tensor, doc: torch.Tensor) -> torch.Tensor:
        doc_embedding = self.embedding if self.shared else self.doc_embedding
        pooled = torch.cat([torch.tanh(self.embedding(query)).mean(1), doc_embedding(doc).mean(1)], 1)
        return self.fc(pooled)


class MLP(nn.Module):
    """Linear-Tanh-Linear-Tanh-Linear with a multiplicative extra argument; ``mode`` ``"module"``
    (own modules), ``"reused"`` (one Tanh called twice) or ``"functional"`` (``torch.tanh``)."""

    def __init__(self, mode: str = "module") -> None:
        super().__init__()
        self.mode = mode
        self.fc1, self.fc2, self.fc3 = nn.Linear(5, 6), nn.Linear(6, 4), nn.Linear(4, 3)
        self.act1, self.act2 = nn.Tanh(), nn.Tanh()

    def forward(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        if self.mode == "module":
            h = self.act2(self.fc2(self.act1(self.fc1(x))))
        elif self.mode == "reused":
            h = self.act1(self.fc2(self.act1(self.fc1(x))))
        else:
            h = torch.tanh(self.fc2(torch.tanh(self.fc1(x))))
        return self.fc3(h * scale)


class ReluMLP(nn.Module):
    """Linear-ReLU-Linear-ReLU-Linear, as :class:`MLP`'s modes (with ``F.relu``)."""

    def __init__(self, mode: str = "module") -> None:
        super().__init__()
        self.mode = mode
        self.fc1, self.fc2, self.fc3 = nn.Linear(5, 7), nn.Linear(7, 6), nn.Linear(6, 3)
        self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "module":
            return self.fc3(self.relu2(self.fc2(self.relu1(self.fc1(x)))))
        if self.mode == "reused":
            return self.fc3(self.relu1(self.fc2(self.relu1(self.fc1(x)))))
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class CNN(nn.Module):
    """Conv-ReLU-Conv-ReLU-Linear, as :class:`MLP`'s modes (with ``F.relu``)."""

    def __init__(self, mode: str = "module") -> None:
        super().__init__()
        self.mode = mode
        self.conv1, self.conv2 = nn.Conv2d(2, 4, 3, padding=1), nn.Conv2d(4, 3, 3)
        self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()
        self.fc = nn.Linear(3 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "module":
            h = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        elif self.mode == "reused":
            h = self.relu1(self.conv2(self.relu1(self.conv1(x))))
        else:
            h = F.relu(self.conv2(F.relu(self.conv1(x))))
        return self.fc(h.flatten(1))


def _twin(cls: type[nn.Module], module_version: nn.Module, mode: str) -> nn.Module:
    twin = cls(mode).to(DTYPE).eval()
    twin.load_state_dict(module_version.state_dict())
    return twin


@pytest.fixture
def text() -> Text:
    return _seeded(Text(), 1)  # type: ignore[return-value]


@pytest.fixture
def token_ids() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(1, 30, (3, 7), generator=_gen(2))
    return ids, torch.zeros_like(ids)  # padding-token references


@pytest.fixture
def mlp() -> MLP:
    return _seeded(MLP(), 3)  # type: ignore[return-value]


@pytest.fixture
def mlp_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return _randn(4, 5, seed=4), torch.rand(4, 1, dtype=DTYPE, generator=_gen(5)) + 0.5


@pytest.fixture
def relu_mlp() -> ReluMLP:
    return _seeded(ReluMLP(), 6)  # type: ignore[return-value]


@pytest.fixture
def cnn() -> CNN:
    return _seeded(CNN(), 7)  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------------
# LayerIntegratedGradients


def test_layer_ig_text_model_matches_captum(text: Text, token_ids: tuple[torch.Tensor, torch.Tensor]) -> None:
    ids, ref_ids = token_ids
    ours, delta = LayerIntegratedGradients(text, text.embedding).attribute(
        ids, baselines=ref_ids, target=1, return_convergence_delta=True
    )
    theirs, their_delta = _quiet(
        captum_attr.LayerIntegratedGradients(text, text.embedding).attribute,
        ids,
        baselines=ref_ids,
        target=1,
        return_convergence_delta=True,
    )
    assert ours.shape == (3, 7, 8)
    _close(ours, theirs, QUADRATURE)
    # the model is linear in the embeddings: LIG_lj = W_1j / L (E[id_l] - E[ref_l])_j, exactly
    E, W = text.embedding.weight.detach(), text.fc.weight.detach()
    expected = W[1] / ids.shape[1] * (E[ids] - E[ref_ids])
    _close(ours, expected, 1e-12)
    assert delta.abs().max() < 1e-12
    torch.testing.assert_close(delta, their_delta, rtol=0, atol=1e-6)


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid"])
@pytest.mark.parametrize("multiply_by_inputs", [True, False])
def test_layer_ig_nonlinear_text_model_matches_captum(method: str, multiply_by_inputs: bool) -> None:
    model = _seeded(FlatText(), 8)
    ids = torch.randint(0, 30, (3, 6), generator=_gen(9))
    kwargs: dict[str, Any] = dict(
        baselines=5, target=[2, 0, 1], n_steps=20, method=method, return_convergence_delta=True
    )
    ours, delta = LayerIntegratedGradients(model, model.embedding, multiply_by_inputs=multiply_by_inputs).attribute(
        ids, **kwargs
    )
    theirs, their_delta = _quiet(
        captum_attr.LayerIntegratedGradients(model, model.embedding, multiply_by_inputs=multiply_by_inputs).attribute,
        ids,
        **kwargs,
    )
    _close(ours, theirs, QUADRATURE)
    if multiply_by_inputs:
        torch.testing.assert_close(delta, their_delta, rtol=0, atol=1e-6)


def test_layer_ig_one_example_and_internal_batches(text: Text, token_ids: tuple[torch.Tensor, torch.Tensor]) -> None:
    ids, ref_ids = token_ids
    lig = LayerIntegratedGradients(text, text.embedding)
    one = lig.attribute(ids[1:2], baselines=ref_ids[0], target=2, n_steps=9)
    theirs = _quiet(
        captum_attr.LayerIntegratedGradients(text, text.embedding).attribute,
        ids[1:2],
        baselines=ref_ids[:1],
        target=2,
        n_steps=9,
    )
    _close(one, theirs, QUADRATURE)
    whole = lig.attribute(ids, baselines=ref_ids, target=[0, 1, 2], n_steps=9)
    chunked = _quiet(lig.attribute, ids, baselines=ref_ids, target=[0, 1, 2], n_steps=9, internal_batch_size=7)
    _close(chunked, whole, 1e-12)


@pytest.mark.parametrize("layer, to_input", [("fc2", False), ("act1", False), ("fc2", True), ("fc1", True)])
@pytest.mark.parametrize("internal_batch_size", [None, 12])
def test_layer_ig_float_inputs_matches_captum(
    mlp: MLP, mlp_inputs: tuple[torch.Tensor, torch.Tensor], layer: str, to_input: bool, internal_batch_size: Any
) -> None:
    x, scale = mlp_inputs
    kwargs: dict[str, Any] = dict(
        baselines=_randn(1, 5, seed=10),
        target=[0, 2, 1, 1],
        additional_forward_args=scale,
        n_steps=15,
        internal_batch_size=internal_batch_size,
        attribute_to_layer_input=to_input,
        return_convergence_delta=True,
    )
    module = mlp.get_submodule(layer)
    ours, delta = _quiet(LayerIntegratedGradients(mlp, module).attribute, x, **kwargs)
    theirs, their_delta = _quiet(captum_attr.LayerIntegratedGradients(mlp, module).attribute, x, **kwargs)
    _close(ours, theirs, QUADRATURE)
    torch.testing.assert_close(delta, their_delta, rtol=0, atol=1e-6)


def test_layer_ig_at_the_first_layers_input_is_integrated_gradients(
    mlp: MLP, mlp_inputs: tuple[torch.Tensor, torch.Tensor]
) -> None:
    from deltalift.methods.integrated_gradients import IntegratedGradients

    x, scale = mlp_inputs
    kwargs: dict[str, Any] = dict(baselines=0.3, target=1, additional_forward_args=scale, n_steps=10)
    ours = LayerIntegratedGradients(mlp, mlp.fc1).attribute(x, attribute_to_layer_input=True, **kwargs)
    _close(ours, IntegratedGradients(mlp).attribute(x, **kwargs), 1e-12)


def test_layer_ig_functional_embedding_twin(text: Text, token_ids: tuple[torch.Tensor, torch.Tensor]) -> None:
    ids, ref_ids = token_ids
    twin = FunctionalText(text).eval()
    ours = LayerIntegratedGradients(twin, "embedding").attribute(ids, baselines=ref_ids, target=0)
    theirs = _quiet(
        captum_attr.LayerIntegratedGradients(text, text.embedding).attribute, ids, baselines=ref_ids, target=0
    )
    _close(ours, theirs, QUADRATURE)


def test_layer_ig_reused_embedding_twin() -> None:
    separate = _seeded(Pair(shared=False), 11)
    with torch.no_grad():
        separate.doc_embedding.weight.copy_(separate.embedding.weight)  # two modules, one table
    shared = Pair(shared=True).to(DTYPE).eval()
    shared.load_state_dict(separate.state_dict())
    query = torch.randint(1, 30, (2, 5), generator=_gen(12))
    doc = torch.randint(1, 30, (2, 4), generator=_gen(13))
    inputs, baselines = (query, doc), (torch.zeros_like(query), torch.zeros_like(doc))
    for node, module in (("node:embedding", separate.embedding), ("embedding_1", separate.doc_embedding)):
        ours = LayerIntegratedGradients(shared, node).attribute(inputs, baselines=baselines, target=1, n_steps=12)
        theirs = _quiet(
            captum_attr.LayerIntegratedGradients(separate, module).attribute,
            inputs,
            baselines=baselines,
            target=1,
            n_steps=12,
        )
        _close(ours, theirs, QUADRATURE)
    with pytest.raises(ValueError, match="runs 2 times"):
        LayerIntegratedGradients(shared, shared.embedding).attribute(inputs, baselines=baselines, target=1)


def test_layer_ig_reused_and_functional_activation_twins(
    mlp: MLP, mlp_inputs: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, scale = mlp_inputs
    kwargs: dict[str, Any] = dict(baselines=0.1, target=2, additional_forward_args=scale, n_steps=10)
    theirs = _quiet(captum_attr.LayerIntegratedGradients(mlp, mlp.act2).attribute, x, **kwargs)
    for mode in ("reused", "functional"):
        ours = LayerIntegratedGradients(_twin(MLP, mlp, mode), "tanh_1").attribute(x, **kwargs)
        _close(ours, theirs, QUADRATURE)


def test_layer_ig_refuses_integer_activations(text: Text, token_ids: tuple[torch.Tensor, torch.Tensor]) -> None:
    ids, _ = token_ids
    with pytest.raises(ValueError, match="not one floating tensor|needs a floating"):
        LayerIntegratedGradients(text, text.embedding).attribute(ids, target=0, attribute_to_layer_input=True)
    with pytest.raises(ValueError, match="device_ids"):
        LayerIntegratedGradients(text, text.embedding, device_ids=[0])


# --------------------------------------------------------------------------------------------------
# LayerActivation and LayerGradientXActivation


@pytest.mark.parametrize("layer, to_input", [("fc2", False), ("act1", False), ("act2", True)])
def test_layer_activation_and_gradient_x_activation_match_captum(
    mlp: MLP, mlp_inputs: tuple[torch.Tensor, torch.Tensor], layer: str, to_input: bool
) -> None:
    x, scale = mlp_inputs
    module = mlp.get_submodule(layer)
    ours = LayerActivation(mlp, module).attribute(x, scale, attribute_to_layer_input=to_input)
    theirs = captum_attr.LayerActivation(mlp, module).attribute(x, scale, attribute_to_layer_input=to_input)
    _close(ours, theirs, EXACT)
    for multiply in (True, False):
        kwargs: dict[str, Any] = dict(
            target=[1, 0, 2, 2], additional_forward_args=scale, attribute_to_layer_input=to_input
        )
        ours = LayerGradientXActivation(mlp, module, multiply_by_inputs=multiply).attribute(x, **kwargs)
        theirs = _quiet(
            captum_attr.LayerGradientXActivation(mlp, module, multiply_by_inputs=multiply).attribute, x, **kwargs
        )
        _close(ours, theirs, EXACT)


def test_layer_activation_and_gradient_x_activation_on_token_ids(
    text: Text, token_ids: tuple[torch.Tensor, torch.Tensor]
) -> None:
    ids, _ = token_ids
    _close(LayerActivation(text, text.embedding).attribute(ids), text.embedding(ids).detach(), 0)
    ours = LayerGradientXActivation(text, text.embedding).attribute(ids, target=2)
    theirs = _quiet(captum_attr.LayerGradientXActivation(text, text.embedding).attribute, ids, target=2)
    _close(ours, theirs, EXACT)
    _close(LayerGradientXActivation(FunctionalText(text), "embedding").attribute(ids, target=2), theirs, EXACT)


def test_layer_activation_and_gradient_x_activation_twins(
    mlp: MLP, mlp_inputs: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, scale = mlp_inputs
    activation = captum_attr.LayerActivation(mlp, mlp.act2).attribute(x, scale)
    gxa = _quiet(captum_attr.LayerGradientXActivation(mlp, mlp.act2).attribute, x, 1, scale)
    for mode in ("reused", "functional"):
        twin = _twin(MLP, mlp, mode)
        _close(LayerActivation(twin, "tanh_1").attribute(x, scale), activation, EXACT)
        _close(LayerGradientXActivation(twin, "tanh_1").attribute(x, 1, scale), gxa, EXACT)


# --------------------------------------------------------------------------------------------------
# GradientShap


def _gradient_shap(cls: Any, model: nn.Module, *args: Any, **kwargs: Any) -> Any:
    np.random.seed(21)
    torch.manual_seed(22)
    return _quiet(cls(model, multiply_by_inputs=kwargs.pop("multiply_by_inputs", True)).attribute, *args, **kwargs)


@pytest.mark.parametrize("stdevs", [0.0, 0.2, (0.3, 0.05)])
@pytest.mark.parametrize("multiply_by_inputs", [True, False])
def test_gradient_shap_matches_captum_with_the_same_seeds(stdevs: Any, multiply_by_inputs: bool) -> None:
    model = _seeded(MLP(), 14)
    x, scale = _randn(3, 5, seed=15), torch.rand(3, 1, dtype=DTYPE, generator=_gen(16)) + 0.5
    wrapped = _TwoInputs(model)
    inputs = (x[:, :3], x[:, 3:])
    baselines = (_randn(6, 3, seed=17), _randn(4, 2, seed=18))
    if isinstance(stdevs, float):
        inputs, baselines, wrapped = x, _randn(6, 5, seed=17), model  # type: ignore[assignment]
    kwargs: dict[str, Any] = dict(
        baselines=baselines,
        n_samples=7,
        stdevs=stdevs,
        target=[2, 0, 1],
        additional_forward_args=scale,
        return_convergence_delta=True,
        multiply_by_inputs=multiply_by_inputs,
    )
    ours, delta = _gradient_shap(GradientShap, wrapped, inputs, **kwargs)
    theirs, their_delta = _gradient_shap(captum_attr.GradientShap, wrapped, inputs, **kwargs)
    assert type(ours) is type(theirs)
    _close(ours, theirs, EXACT)
    assert delta.shape == (3 * 7,)
    if multiply_by_inputs:
        _close(delta, their_delta, EXACT)


class _TwoInputs(nn.Module):
    """:class:`MLP` with its input split in two tensors."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return self.model(torch.cat([a, b], 1), scale)


def test_gradient_shap_callable_baselines_and_functional_twin(relu_mlp: ReluMLP) -> None:
    x, references = _randn(4, 5, seed=19), _randn(5, 5, seed=20)
    theirs = _gradient_shap(
        captum_attr.GradientShap, relu_mlp, x, baselines=references, n_samples=6, stdevs=0.1, target=1
    )
    for mode in ("reused", "functional"):
        twin = _twin(ReluMLP, relu_mlp, mode)
        ours = _gradient_shap(
            GradientShap, twin, x, baselines=lambda inputs: references, n_samples=6, stdevs=0.1, target=1
        )
        _close(ours, theirs, EXACT)


def test_gradient_shap_is_expected_gradients_on_a_linear_model() -> None:
    """On a linear model every sample gives w * (x - b): the mean is w * (x - mean of drawn b)."""
    model = _seeded(nn.Linear(4, 2), 23)
    x, references = _randn(3, 4, seed=24), _randn(5, 4, seed=25)
    np.random.seed(1)
    torch.manual_seed(1)
    ours, delta = GradientShap(model).attribute(x, references, n_samples=4, target=1, return_convergence_delta=True)
    np.random.seed(1)
    drawn = references[np.random.choice(5, 12).tolist()].reshape(3, 4, 4).mean(1)
    _close(ours, model.weight.detach()[1] * (x - drawn), 1e-12)
    assert delta.abs().max() < 1e-12
    with pytest.raises(ValueError, match="not a set of references"):
        GradientShap(model).attribute(x, references[:, :3])


# --------------------------------------------------------------------------------------------------
# LayerDeepLiftShap and NeuronDeepLiftShap


def _references() -> torch.Tensor:
    return _randn(4, 5, seed=26)


@pytest.mark.parametrize("layer, to_input", [("fc2", False), ("relu1", False), ("fc3", True)])
@pytest.mark.parametrize("multiply_by_inputs", [True, False])
def test_layer_deeplift_shap_matches_captum(
    relu_mlp: ReluMLP, layer: str, to_input: bool, multiply_by_inputs: bool
) -> None:
    x = _randn(3, 5, seed=27)
    module = relu_mlp.get_submodule(layer)
    kwargs: dict[str, Any] = dict(target=[0, 2, 1], attribute_to_layer_input=to_input, return_convergence_delta=True)
    ours, delta = LayerDeepLiftShap(relu_mlp, module, multiply_by_inputs, eps=EPS).attribute(x, _references(), **kwargs)
    theirs, their_delta = _quiet(
        captum_attr.LayerDeepLiftShap(relu_mlp, module, multiply_by_inputs).attribute, x, _references(), **kwargs
    )
    assert isinstance(ours, torch.Tensor)
    _close(ours, theirs, EXACT)
    assert delta.shape == (3 * 4,)
    if multiply_by_inputs:
        torch.testing.assert_close(delta, their_delta, rtol=0, atol=1e-12)
        assert delta.abs().max() < 1e-12  # every path runs through these layers


def test_layer_deeplift_shap_twins(relu_mlp: ReluMLP) -> None:
    x = _randn(3, 5, seed=28)
    theirs = _quiet(captum_attr.LayerDeepLiftShap(relu_mlp, relu_mlp.fc2).attribute, x, _references(), target=1)
    at_relu = _quiet(captum_attr.LayerDeepLiftShap(relu_mlp, relu_mlp.relu2).attribute, x, _references(), target=1)
    for mode in ("reused", "functional"):
        twin = _twin(ReluMLP, relu_mlp, mode)
        _close(LayerDeepLiftShap(twin, twin.fc2, eps=EPS).attribute(x, _references(), target=1), theirs, EXACT)
        _close(LayerDeepLiftShap(twin, "relu_1", eps=EPS).attribute(x, _references(), target=1), at_relu, EXACT)
    # Captum's hooks see no functional ReLU: its gradient x difference is not DeepLIFT
    functional = _twin(ReluMLP, relu_mlp, "functional")
    wrong = _quiet(captum_attr.LayerDeepLiftShap(functional, functional.fc2).attribute, x, _references(), target=1)
    assert not torch.allclose(wrong, theirs, rtol=1e-3)


@pytest.mark.parametrize(
    "selector", [3, (slice(1, 4),), lambda z: z[:, 0] - 2 * z[:, 5]], ids=["int", "slice", "callable"]
)
@pytest.mark.parametrize("to_input", [False, True])
def test_neuron_deeplift_shap_matches_captum(relu_mlp: ReluMLP, selector: Any, to_input: bool) -> None:
    x = _randn(3, 5, seed=29)
    ours = NeuronDeepLiftShap(relu_mlp, relu_mlp.fc2, eps=EPS).attribute(
        x, selector, _references(), attribute_to_neuron_input=to_input
    )
    theirs = _quiet(
        captum_attr.NeuronDeepLiftShap(relu_mlp, relu_mlp.fc2).attribute,
        x,
        selector,
        _references(),
        attribute_to_neuron_input=to_input,
    )
    _close(ours, theirs, EXACT)


def test_neuron_deeplift_shap_twins_and_delta(relu_mlp: ReluMLP) -> None:
    x = _randn(3, 5, seed=30)
    theirs = _quiet(captum_attr.NeuronDeepLiftShap(relu_mlp, relu_mlp.relu2).attribute, x, 2, _references())
    for mode in ("reused", "functional"):
        twin = _twin(ReluMLP, relu_mlp, mode)
        ours, delta = NeuronDeepLiftShap(twin, "relu_1", eps=EPS).attribute(
            x, 2, _references(), return_convergence_delta=True
        )
        _close(ours, theirs, EXACT)
        assert delta.shape == (3 * 4,) and delta.abs().max() < 1e-12
    with pytest.raises(ValueError, match="out of range"):
        NeuronDeepLiftShap(relu_mlp, relu_mlp.fc2).attribute(x, 6, _references())


# --------------------------------------------------------------------------------------------------
# NeuronGuidedBackprop and NeuronDeconvolution


NEURON_CLASSES = [
    (NeuronGuidedBackprop, captum_attr.NeuronGuidedBackprop),
    (NeuronDeconvolution, captum_attr.NeuronDeconvolution),
]
SELECTORS = [(1, 2, 3), (slice(None), 1, slice(0, 2)), lambda z: (z[:, 0] * z[:, 2]).sum((1, 2))]


@pytest.mark.parametrize("ours_cls, their_cls", NEURON_CLASSES, ids=["guided", "deconv"])
@pytest.mark.parametrize("selector", SELECTORS, ids=["index", "slices", "callable"])
@pytest.mark.parametrize("layer, to_input", [("conv2", False), ("relu2", False), ("conv2", True)])
def test_neuron_guided_matches_captum(
    cnn: CNN, ours_cls: Any, their_cls: Any, selector: Any, layer: str, to_input: bool
) -> None:
    x = _randn(3, 2, 6, 6, seed=31)
    module = cnn.get_submodule(layer)
    if to_input and not callable(selector):
        selector = (2,) + tuple(selector[1:])  # the layer's input has 4 channels of 6 x 6
    ours = ours_cls(cnn, module).attribute(x, selector, attribute_to_neuron_input=to_input)
    theirs = _quiet(their_cls(cnn, module).attribute, x, selector, attribute_to_neuron_input=to_input)
    _close(ours, theirs, EXACT)
    assert ours.abs().sum() > 0


@pytest.mark.parametrize("ours_cls, their_cls", NEURON_CLASSES, ids=["guided", "deconv"])
def test_neuron_guided_twins(cnn: CNN, ours_cls: Any, their_cls: Any) -> None:
    x = _randn(3, 2, 6, 6, seed=32)
    theirs = _quiet(their_cls(cnn, cnn.relu2).attribute, x, (0, 1, 1))
    at_conv = _quiet(their_cls(cnn, cnn.conv2).attribute, x, (0, 1, 1))
    for mode in ("reused", "functional"):
        twin = _twin(CNN, cnn, mode)
        _close(ours_cls(twin, "relu_1").attribute(x, (0, 1, 1)), theirs, EXACT)
        _close(ours_cls(twin, twin.conv2).attribute(x, (0, 1, 1)), at_conv, EXACT)
    functional = _twin(CNN, cnn, "functional")
    plain = _quiet(their_cls(functional, functional.conv2).attribute, x, (0, 1, 1))
    assert not torch.allclose(plain, at_conv, rtol=1e-3)  # Captum sees no functional ReLU


def test_neuron_guided_tuple_inputs_and_errors(cnn: CNN) -> None:
    x = _randn(2, 2, 6, 6, seed=33)

    class Split(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cnn = cnn

        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return self.cnn(torch.cat([a, b], 1))

    split = Split().eval()
    ours = NeuronGuidedBackprop(split, "cnn.conv2").attribute((x[:, :1], x[:, 1:]), (1, 0, 0))
    theirs = _quiet(captum_attr.NeuronGuidedBackprop(split, split.cnn.conv2).attribute, (x[:, :1], x[:, 1:]), (1, 0, 0))
    assert isinstance(ours, tuple) and len(ours) == 2
    _close(ours, theirs, EXACT)
    with pytest.raises(ValueError, match="index every dimension after the batch \\(3\\)"):
        NeuronGuidedBackprop(cnn, cnn.conv2).attribute(x, (1, 0))
    with pytest.raises(ValueError, match="out of range"):
        NeuronDeconvolution(cnn, cnn.conv2).attribute(x, (3, 0, 0))
    with pytest.raises(ValueError, match="one value per example"):
        NeuronGuidedBackprop(cnn, cnn.conv2).attribute(x, lambda z: z[:, 0])


def test_class_flags_and_exports() -> None:
    import deltalift

    for cls in (LayerIntegratedGradients, GradientShap, LayerDeepLiftShap, NeuronDeepLiftShap):
        assert getattr(deltalift, cls.__name__) is cls
    for cls in (NeuronGuidedBackprop, NeuronDeconvolution, LayerActivation, LayerGradientXActivation):
        assert getattr(deltalift, cls.__name__) is cls
    model = nn.Linear(2, 2)
    assert LayerIntegratedGradients(model, model).has_convergence_delta()
    assert GradientShap(model).has_convergence_delta()
    assert LayerDeepLiftShap(model, model).has_convergence_delta()
    assert not LayerActivation(model, model).has_convergence_delta()
    assert not NeuronGuidedBackprop(model, model).multiplies_by_inputs
    assert not LayerGradientXActivation(model, model, multiply_by_inputs=False).multiplies_by_inputs
    assert LayerIntegratedGradients(model, model).multiplies_by_inputs
    assert LayerActivation(model, model).multiplies_by_inputs  # Captum's value


# --------------------------------------------------------------------------------------------------
# Captum's lists of layers


class TwoTowers(nn.Module):
    """Two embeddings (or, ``functional``, two ``F.embedding`` calls) combined nonlinearly, and a
    module returning two tensors: independent layers for a list."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.left, self.right = nn.Embedding(20, 4), nn.Embedding(20, 4)
        self.fc = nn.Linear(4, 2)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.tanh(self.left(a).mean(1)) * torch.sigmoid(self.right(b).mean(1)))


def _towers() -> tuple[TwoTowers, torch.Tensor, torch.Tensor]:
    model = TwoTowers().to(DTYPE).eval()
    g = _gen(5)
    return model, torch.randint(1, 20, (3, 6), generator=g), torch.randint(1, 20, (3, 6), generator=g)


def test_layer_activation_list_is_one_entry_per_layer(mlp: MLP, mlp_inputs: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, scale = mlp_inputs
    layers = [mlp.fc1, mlp.act1, "fc3"]
    listed = LayerActivation(mlp, layers).attribute(x, additional_forward_args=(scale,))
    assert isinstance(listed, list) and len(listed) == 3
    h1 = mlp.fc1(x)
    torch.testing.assert_close(listed[0], h1, rtol=0, atol=0)
    torch.testing.assert_close(listed[1], torch.tanh(h1), rtol=0, atol=0)
    torch.testing.assert_close(listed[2], mlp(x, scale), rtol=0, atol=0)


def test_layer_gradient_x_activation_list_takes_total_derivatives(
    mlp: MLP, mlp_inputs: tuple[torch.Tensor, torch.Tensor]
) -> None:
    """Dependent layers (fc1 feeds fc2): each gets dt/dz through the others, as one layer alone."""
    x, scale = mlp_inputs
    listed = LayerGradientXActivation(mlp, [mlp.fc1, mlp.fc2]).attribute(x, target=1, additional_forward_args=(scale,))
    for layer, got in zip([mlp.fc1, mlp.fc2], listed):
        alone = LayerGradientXActivation(mlp, layer).attribute(x, target=1, additional_forward_args=(scale,))
        torch.testing.assert_close(got, alone, rtol=1e-12, atol=1e-14)
    # by hand at fc1: z * (W2^T (tanh'(h2) * W3^T[1] * scale ... )) through autograd on the eager model
    z1 = mlp.fc1(x).detach().requires_grad_(True)
    out = mlp.fc3(mlp.act2(mlp.fc2(mlp.act1(z1))) * scale)[:, 1].sum()
    (g1,) = torch.autograd.grad(out, z1)
    torch.testing.assert_close(listed[0], z1.detach() * g1, rtol=1e-12, atol=1e-14)


def _gauss_legendre_ig(f: Any, z: tuple[torch.Tensor, ...], z0: tuple[torch.Tensor, ...], n: int) -> list[torch.Tensor]:
    """Integrated gradients of ``f`` over the straight path ``z0 -> z`` of all ``z`` at once, by
    Gauss-Legendre quadrature on [0, 1] written out here (numpy nodes), float64."""
    nodes, weights = np.polynomial.legendre.leggauss(n)
    totals = [torch.zeros_like(a) for a in z]
    for node, weight in zip((nodes + 1) / 2, weights / 2):
        points = [(b + node * (a - b)).requires_grad_(True) for a, b in zip(z, z0)]
        grads = torch.autograd.grad(f(*points).sum(), points)
        totals = [t + weight * g for t, g in zip(totals, grads)]
    return [t * (a - b) for t, a, b in zip(totals, z, z0)]


@pytest.mark.parametrize("functional", [False, True])
def test_layer_ig_list_interpolates_the_layers_together(functional: bool) -> None:
    model, a, b = _towers()
    layers: list[Any] = ["embedding", "embedding_1"] if functional else [model.left, model.right]
    lig = LayerIntegratedGradients(model, layers)
    zeros = (torch.zeros_like(a), torch.zeros_like(b))
    listed, delta = lig.attribute((a, b), baselines=zeros, target=1, n_steps=40, return_convergence_delta=True)
    assert isinstance(listed, list) and len(listed) == 2

    def head(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        return model.fc(torch.tanh(left.mean(1)) * torch.sigmoid(right.mean(1)))[:, 1]

    z = (model.left(a).detach(), model.right(b).detach())
    z0 = (model.left(zeros[0]).detach(), model.right(zeros[1]).detach())
    expected = _gauss_legendre_ig(head, z, z0, 40)
    for got, want in zip(listed, expected):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    change = head(*z) - head(*z0)
    torch.testing.assert_close(delta, sum(e.flatten(1).sum(1) for e in expected) - change, rtol=0, atol=1e-10)
    assert delta.abs().max() < 1e-6  # both layers together carry the whole change


def test_layer_ig_list_matches_captum() -> None:
    model, a, b = _towers()
    zeros = (torch.zeros_like(a), torch.zeros_like(b))
    ours = LayerIntegratedGradients(model, [model.left, model.right]).attribute((a, b), zeros, target=0)
    theirs = _quiet(captum_attr.LayerIntegratedGradients(model, [model.left, model.right]).attribute, (a, b), zeros, 0)
    for got, want in zip(ours, theirs):
        _close(got, want, QUADRATURE)


def test_list_with_an_unused_layer_and_shared_activations() -> None:
    class Unused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.spare = nn.Linear(3, 2), nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.spare(x)  # runs, but the output does not use it (torch.export drops it)
            return self.fc(x)

    model = Unused().to(DTYPE).eval()
    x = _randn(2, 3, seed=1)
    layer_gxa = LayerGradientXActivation(model, [model.fc, model.spare])
    with pytest.raises(ValueError, match="materialize_grads"):
        layer_gxa.attribute(x, target=0)
    used, spare = layer_gxa.attribute(x, target=0, grad_kwargs={"materialize_grads": True})
    torch.testing.assert_close(spare, torch.zeros(2, 2, dtype=DTYPE), rtol=0, atol=0)
    torch.testing.assert_close(used[:, 1], torch.zeros(2, dtype=DTYPE), rtol=0, atol=0)
    torch.testing.assert_close(used[:, 0], model.fc(x)[:, 0].detach(), rtol=0, atol=0)
    listed = LayerActivation(model, [model.fc, model.spare]).attribute(x)
    torch.testing.assert_close(listed[1], model.spare(x).detach(), rtol=0, atol=0)
    with pytest.raises(ValueError, match="empty list"):
        LayerActivation(model, [])


class SharedInput(nn.Module):
    """Two modules that both take ``a``: with ``attribute_to_layer_input`` the layers of a list share
    that input (Captum's ``BasicModel_MultiLayer_TrueMultiInput`` pattern)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(7)
        self.first, self.second = nn.Linear(3, 2), nn.Bilinear(3, 3, 2)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.first(a)) * self.second(b, a)


def test_a_list_of_layers_sharing_an_input_gives_each_layer_its_own_uses() -> None:
    """Layer inputs: ``first`` takes ``a``, ``second`` takes ``(b, a)``: each layer's attribution
    to ``a`` integrates over its own uses only, so the two add up to Integrated Gradients of ``a``
    (Captum's test of this case), and each equals an explicit two-copy computation."""
    model = SharedInput().to(DTYPE).eval()
    a, b = _randn(4, 3, seed=2), _randn(4, 3, seed=3)
    zeros = (torch.zeros_like(a), torch.zeros_like(b))
    lig = LayerIntegratedGradients(model, [model.first, model.second])
    first_a, (second_b, second_a) = lig.attribute((a, b), zeros, target=1, attribute_to_layer_input=True, n_steps=40)
    ig_a, ig_b = IntegratedGradients(model).attribute((a, b), zeros, target=1, n_steps=40)
    torch.testing.assert_close(first_a + second_a, ig_a, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(second_b, ig_b, rtol=1e-10, atol=1e-12)

    def two_copies(a_first: torch.Tensor, b_: torch.Tensor, a_second: torch.Tensor) -> torch.Tensor:
        return (torch.tanh(model.first(a_first)) * model.second(b_, a_second))[:, 1]

    expected = _gauss_legendre_ig(two_copies, (a, b, a), (zeros[0], zeros[1], zeros[0]), 40)
    for got, want in zip((first_a, second_b, second_a), expected):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    # gradient x activation at the shared input: each layer's own uses, summing to the input gradient
    gxa_first, (_, gxa_second) = LayerGradientXActivation(model, [model.first, model.second]).attribute(
        (a, b), target=1, attribute_to_layer_input=True
    )
    leaf = a.clone().requires_grad_(True)
    (grad_a,) = torch.autograd.grad(model(leaf, b)[:, 1].sum(), leaf)
    torch.testing.assert_close(gxa_first + gxa_second, a * grad_a, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(gxa_first, a * grad_a)
