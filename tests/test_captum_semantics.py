"""Captum's calling conventions, where running Captum's own tests with deltalift's classes found
deltalift refusing or misreading them.

One section per root cause: Captum's ``grad_kwargs``; inputs of shape ``(batch,)``; target
selection (``captum._utils.common._select_targets``: tuples index the dimensions after the batch,
``None`` needs one value per example); integer inputs to Occlusion; a baseline function taking
no argument; a layer with several activation tensors; a partial ``neuron_selector``; token ids
at an embedding layer.  Each section compares with Captum in float64 where Captum is right (models
of hooked ``nn.Module`` nonlinearities, each used once), and checks a functional or reused-module
twin, where Captum cannot run, against an independent computation.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

captum_attr = pytest.importorskip("captum.attr")

from deltalift import (  # noqa: E402
    DeepLift,
    DeepLiftShap,
    IntegratedGradients,
    InternalInfluence,
    LayerDeepLift,
    LayerGradCam,
    NeuronDeepLift,
    NoiseTunnel,
    Occlusion,
    Saliency,
)
from deltalift.inputs import select_target  # noqa: E402

DTYPE = torch.float64
EPS = 1e-10  # Captum's
RTOL, ATOL = 1e-9, 1e-12
#: Captum rounds its quadrature weights (integrated gradients, internal influence) and Occlusion's
#: output to float32.
FLOAT32 = {"rtol": 1e-6, "atol": 1e-9}
DELTA_FLOAT32 = 1e-7  # the convergence delta of those weights, for outputs of order one


def close(actual, expected, rtol=RTOL, atol=ATOL):
    if isinstance(expected, (tuple, list)):
        assert isinstance(actual, (tuple, list)) and len(actual) == len(expected)
        for a, e in zip(actual, expected):
            close(a, e, rtol, atol)
        return
    torch.testing.assert_close(actual.detach(), expected.detach().to(actual.dtype), rtol=rtol, atol=atol)


def captum(method, *args, **kwargs):
    """Captum's attribution (its warnings about hooks and gradients silenced)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return method.attribute(*args, **kwargs)


def grad(x):
    """A copy of ``x`` that requires grad (Captum's hooks want one)."""
    return x.detach().clone().requires_grad_(True)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# --------------------------------------------------------------------------------------------------
# models


class WithUnusedLayer(nn.Module):
    """Captum's ``BasicModel_MultiLayer(multi_input_module=True)`` in spirit: ``relu`` runs but its
    output is thrown away, so the output does not depend on it."""

    def __init__(self) -> None:
        super().__init__()
        self.lin1 = nn.Linear(3, 4)
        self.relu = nn.ReLU()
        self.act = nn.ReLU()
        self.lin2 = nn.Linear(4, 2)

    def forward(self, x):
        h = self.lin1(x)
        self.relu(h)
        return self.lin2(self.act(h))


class TwoOutputs(nn.Module):
    """Returns ``(2 * sigmoid(a), tanh(b))``, computing the second first, so that the order of its
    outputs (and of its inputs) differs from the order of its operations."""

    def __init__(self) -> None:
        super().__init__()
        self.tanh = nn.Tanh()
        self.sigmoid = nn.Sigmoid()

    def forward(self, a, b):
        u = self.tanh(b)
        v = self.sigmoid(a)
        return v * 2.0, u


class TwoOutputsFunctional(nn.Module):
    def forward(self, a, b):
        u = torch.tanh(b)
        v = torch.sigmoid(a)
        return v * 2.0, u


class Split(nn.Module):
    """``lin2(relu(1.5 p + 0.5 q))`` with ``(p, q) = pair(lin1(x), 3 x)``."""

    def __init__(self, functional: bool = False) -> None:
        super().__init__()
        self.lin1 = nn.Linear(3, 3)
        self.pair = TwoOutputsFunctional() if functional else TwoOutputs()
        self.relu = nn.ReLU()
        self.lin2 = nn.Linear(3, 2)

    def forward(self, x):
        p, q = self.pair(self.lin1(x), x * 3.0)
        return self.lin2(self.relu(p * 1.5 + q * 0.5))


class Tail(nn.Module):
    """``Split`` from the pair's outputs on."""

    def __init__(self, model: Split) -> None:
        super().__init__()
        self.model = model

    def forward(self, p, q):
        return self.model.lin2(F.relu(p * 1.5 + q * 0.5))


class Tokens(nn.Module):
    """Token ids -> embedding -> dense -> ReLU -> mean over positions -> two classes."""

    def __init__(self, functional: bool = False, mask_padding: bool = False) -> None:
        super().__init__()
        self.embeddings = nn.Embedding(10, 4, padding_idx=0)
        self.dense = nn.Linear(4, 3)
        self.relu = nn.ReLU()
        self.out = nn.Linear(3, 2)
        self.functional = functional
        self.mask_padding = mask_padding

    def forward(self, ids):
        return self.from_embeddings(self.embeddings(ids), (ids != 0).to(self.dense.weight.dtype))

    def from_embeddings(self, e, mask):
        h = self.dense(e)
        h = F.relu(h) if self.functional else self.relu(h)
        if self.mask_padding:
            h = h * mask.unsqueeze(-1)
        return self.out(h.mean(1))


class FromEmbeddings(nn.Module):
    def __init__(self, model: Tokens) -> None:
        super().__init__()
        self.model = model

    def forward(self, e, mask):
        return self.model.from_embeddings(e, mask)


class OneD(nn.Module):
    """Inputs of shape ``(batch,)``: ``relu(x1 - 1) - relu(x2)``."""

    def __init__(self) -> None:
        super().__init__()
        self.relu1 = nn.ReLU()
        self.relu2 = nn.ReLU()

    def forward(self, x1, x2):
        return self.relu1(x1 - 1.0) - self.relu2(x2)


class OneDFunctional(nn.Module):
    def forward(self, x1, x2):
        return F.relu(x1 - 1.0) - F.relu(x2)


class Stacked(nn.Module):
    """Outputs ``(batch, 2, 2, 2)`` as Captum's ``BasicModel_MultiLayer(multidim_output=True)``,
    or ``(batch, 2, 1)`` with ``narrow``."""

    def __init__(self, narrow: bool = False, functional: bool = False) -> None:
        super().__init__()
        self.lin1 = nn.Linear(3, 4)
        self.relu = nn.ReLU()
        self.lin2 = nn.Linear(4, 2)
        self.narrow = narrow
        self.functional = functional

    def forward(self, x):
        h = self.lin1(x)
        out = self.lin2(F.relu(h) if self.functional else self.relu(h))
        if self.narrow:
            return out[:, :, None]
        mid = torch.stack((out, 2 * out), dim=2)
        return torch.stack((mid, 4 * mid), dim=3)


class OneOutput(nn.Module):
    """One value per example, shaped ``(batch, 1, 1, 1)``."""

    def __init__(self) -> None:
        super().__init__()
        self.lin1 = nn.Linear(3, 4)
        self.relu = nn.ReLU()
        self.lin2 = nn.Linear(4, 1)

    def forward(self, x):
        return self.lin2(self.relu(self.lin1(x)))[:, :, None, None]


class PoolNet(nn.Module):
    """Captum's ``LinearMaxPoolLinearModel``: the pooled activation is ``(batch, 1, 1)``."""

    def __init__(self) -> None:
        super().__init__()
        self.lin1 = nn.Linear(4, 4, bias=False)
        self.pool1 = nn.MaxPool1d(4)
        self.lin2 = nn.Linear(1, 1, bias=False)

    def forward(self, x):
        return self.lin2(self.pool1(self.lin1(x.unsqueeze(1)))[:, 0, :])


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(2, 3, 3)
        self.relu = nn.ReLU()
        self.lin = nn.Linear(12, 2)

    def forward(self, x):
        return self.lin(self.relu(self.conv(x)).flatten(1))


class IntegerModel(nn.Module):
    """Captum's ``BasicModel3``, exact on integers: ``relu(relu(x1) - 1 - relu(x2))``."""

    def forward(self, x1, x2):
        return F.relu(F.relu(x1) - 1 - F.relu(x2))


def model(cls, *args, **kwargs):
    return cls(*args, **kwargs).to(DTYPE).eval()


# --------------------------------------------------------------------------------------------------
# 1. grad_kwargs


def test_materialize_grads_gives_captums_zeros_at_an_unused_layer():
    net = model(WithUnusedLayer)
    x, b = torch.randn(3, 3, dtype=DTYPE), torch.randn(3, 3, dtype=DTYPE)
    kwargs = dict(target=0, grad_kwargs={"materialize_grads": True})
    ours = LayerDeepLift(net, net.relu, eps=EPS).attribute(x, b, return_convergence_delta=True, **kwargs)
    theirs = captum(captum_attr.LayerDeepLift(net, net.relu), grad(x), b, return_convergence_delta=True, **kwargs)
    close(ours, theirs)
    assert not ours[0].any() and ours[0].shape == (3, 4)
    close(
        LayerGradCam(net, net.relu).attribute(x, **kwargs),
        captum(captum_attr.LayerGradCam(net, net.relu), grad(x), **kwargs),
    )
    close(
        InternalInfluence(net, net.relu).attribute(x, b, n_steps=5, **kwargs),
        captum(captum_attr.InternalInfluence(net, net.relu), grad(x), b, n_steps=5, **kwargs),
        **FLOAT32,
    )
    # the activation entering the unused module is still in the graph, but no longer tied to it
    # (Captum's LayerDeepLift gives zeros there, its Grad-CAM and internal influence the gradient)
    with pytest.raises(ValueError, match="activation entering it cannot be found through it; pick that activation"):
        LayerDeepLift(net, net.relu).attribute(x, b, attribute_to_layer_input=True, **kwargs)


def test_an_unused_layer_without_materialize_grads_says_how():
    net = model(WithUnusedLayer)
    x = torch.randn(2, 3, dtype=DTYPE)
    for call in (
        lambda: LayerDeepLift(net, net.relu).attribute(x, target=0),
        lambda: LayerGradCam(net, net.relu).attribute(x, target=0),
        lambda: InternalInfluence(net, net.relu).attribute(x, target=0, n_steps=3),
    ):
        with pytest.raises(ValueError, match=r"relu is not used by the model's output.*materialize_grads"):
            call()


def test_grad_kwargs_that_apply_change_nothing_and_the_others_are_refused():
    net = model(Split)
    x = torch.randn(3, 3, dtype=DTYPE)
    plain = LayerDeepLift(net, net.relu).attribute(x, target=1)
    given = {"materialize_grads": True, "retain_graph": True, "create_graph": False}
    close(LayerDeepLift(net, net.relu).attribute(x, target=1, grad_kwargs=given), plain)
    close(
        LayerGradCam(net, net.relu).attribute(x, target=1, grad_kwargs=given),
        LayerGradCam(net, net.relu).attribute(x, target=1),
    )
    for method in (
        lambda g: LayerDeepLift(net, net.relu).attribute(x, target=1, grad_kwargs=g),
        lambda g: LayerGradCam(net, net.relu).attribute(x, target=1, grad_kwargs=g),
        lambda g: InternalInfluence(net, net.relu).attribute(x, target=1, n_steps=3, grad_kwargs=g),
    ):
        with pytest.raises(ValueError, match=r"grad_kwargs\['create_graph'\] = True does not apply"):
            method({"create_graph": True})
        with pytest.raises(TypeError, match="grad_kwargs must be a dict"):
            method([("retain_graph", True)])


def test_grad_kwargs_at_a_graph_node_of_a_reused_module():
    """A reused module's second call, picked by graph node name (Captum cannot choose one call)."""

    class Reused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3, 3)
            self.relu = nn.ReLU()
            self.out = nn.Linear(3, 2)

        def forward(self, x):
            return self.out(self.relu(self.lin(self.relu(self.lin(x)))))

    net = model(Reused)
    x, b = torch.randn(4, 3, dtype=DTYPE), torch.randn(4, 3, dtype=DTYPE)
    ours, delta = LayerDeepLift(net, "relu_1").attribute(
        x, b, target=0, grad_kwargs={"materialize_grads": True}, return_convergence_delta=True
    )
    # every path runs through the second ReLU: its contributions are the tail's DeepLIFT
    with torch.no_grad():
        a, a0 = net.relu(net.lin(net.relu(net.lin(x)))), net.relu(net.lin(net.relu(net.lin(b))))
    close(ours, DeepLift(net.out).attribute(a, a0, target=0))
    close(delta, torch.zeros(4, dtype=DTYPE))


# --------------------------------------------------------------------------------------------------
# 2. inputs of shape (batch,)


def test_one_dimensional_inputs_match_captum():
    net = model(OneD)
    x1, x2 = torch.tensor([-10.0, 3.0, 1.5, 2.0], dtype=DTYPE), torch.tensor([-5.0, 1.0, 0.25, -1.0], dtype=DTYPE)
    b1, b2 = torch.tensor([0.5, 0.0, 2.0, -1.0], dtype=DTYPE), torch.zeros(4, dtype=DTYPE)
    ours = DeepLift(net, eps=EPS).attribute((x1, x2), (b1, b2), return_convergence_delta=True)
    theirs = captum(captum_attr.DeepLift(net), (grad(x1), grad(x2)), (b1, b2), return_convergence_delta=True)
    close(ours, theirs)
    close(
        DeepLift(net).compute_convergence_delta(ours[0], (b1, b2), (x1, x2)),
        captum_attr.DeepLift(net).compute_convergence_delta(theirs[0], (b1, b2), (x1, x2)),
    )
    ig = IntegratedGradients(net).attribute((x1, x2), (b1, b2), n_steps=20, return_convergence_delta=True)
    ig_captum = captum(
        captum_attr.IntegratedGradients(net), (x1, x2), (b1, b2), n_steps=20, return_convergence_delta=True
    )
    close(ig[0], ig_captum[0], **FLOAT32)
    close(ig[1], ig_captum[1], rtol=0, atol=DELTA_FLOAT32)
    refs = (torch.randn(5, dtype=DTYPE), torch.randn(5, dtype=DTYPE))
    shap = DeepLiftShap(net, eps=EPS).attribute((x1, x2), refs, return_convergence_delta=True)
    close(shap, captum(captum_attr.DeepLiftShap(net), (grad(x1), grad(x2)), refs, return_convergence_delta=True))


def test_one_dimensional_inputs_of_a_functional_model():
    """Captum takes plain gradients through F.relu; summation-to-delta is exact here."""
    net = OneDFunctional()
    x1, x2 = torch.tensor([-10.0, 3.0, 1.5], dtype=DTYPE), torch.tensor([-5.0, 1.0, 0.25], dtype=DTYPE)
    (c1, c2), delta = DeepLift(net, strict=True).attribute((x1, x2), return_convergence_delta=True)
    # one input per term: each term's change is its input's contribution
    close(c1, F.relu(x1 - 1.0) - F.relu(torch.tensor(-1.0, dtype=DTYPE)))
    close(c2, -F.relu(x2))
    close(delta, torch.zeros(3, dtype=DTYPE))
    close(DeepLift(net).compute_convergence_delta((c1, c2), (0.0, 0.0), (x1, x2)), delta)


def test_noise_fraction_on_one_dimensional_inputs():
    """Each example of a ``(batch,)`` input is one number: its range is zero, so is the noise."""
    net = OneDFunctional()
    x1, x2 = torch.tensor([-10.0, 3.0, 1.5], dtype=DTYPE), torch.tensor([-5.0, 1.0, 0.25], dtype=DTYPE)
    smooth = NoiseTunnel(Saliency(net)).attribute((x1, x2), nt_samples=4, noise_fraction=0.2, random_state=0)
    close(smooth, Saliency(net).attribute((x1, x2)))


def test_grad_cam_at_a_one_dimensional_layer():
    """A ``(batch,)`` activation has no channels to sum: ``G * A`` (Captum raises)."""
    net = model(OneD)
    x1, x2 = torch.tensor([-1.0, 3.0, 1.5], dtype=DTYPE), torch.tensor([-5.0, 1.0, 0.5], dtype=DTYPE)
    cam = LayerGradCam(net, net.relu1).attribute((x1, x2))
    close(cam, F.relu(x1 - 1.0))  # the gradient at relu1 is one


# --------------------------------------------------------------------------------------------------
# 3. target selection


def test_select_target_follows_captums_rules():
    out = torch.arange(48.0).reshape(4, 3, 2, 2)
    close(select_target(out, (1, 0, 1), 4), out[:, 1, 0, 1])
    close(
        select_target(out, [(0, 0, 0), (1, 1, 1), (2, 0, 1), (0, 1, 0)], 4),
        out[torch.arange(4), [0, 1, 2, 0], [0, 1, 0, 1], [0, 1, 1, 0]],
    )
    flat = torch.arange(8.0).reshape(4, 2)
    close(select_target(flat, 1, 4), flat[:, 1])
    close(select_target(flat, torch.tensor([1]), 4), flat[:, 1])  # a one-element tensor is one target
    close(select_target(flat, torch.tensor([0, 1, 1, 0]), 4), flat[torch.arange(4), [0, 1, 1, 0]])
    close(select_target(flat, [0, 1, 1, 0], 4), flat[torch.arange(4), [0, 1, 1, 0]])
    single = torch.arange(4.0).reshape(4, 1, 1, 1)
    close(select_target(single, None, 4), single.reshape(4))
    close(select_target(torch.arange(8.0).reshape(4, 2, 1), 1, 4), torch.tensor([1.0, 3.0, 5.0, 7.0]))
    close(select_target(torch.arange(4.0).reshape(4, 1), None, 4), torch.arange(4.0))
    with pytest.raises(ValueError, match=r"target=\(1, 0\) leaves 2 values per example"):
        select_target(out, (1, 0), 4)
    with pytest.raises(ValueError, match=r"has 4 indices but the model output has shape \(4, 3, 2, 2\)"):
        select_target(out, (0, 0, 0, 0), 4)
    with pytest.raises(ValueError, match=r"target 2 is out of range for dimension 2 \(of size 2\)"):
        select_target(out, (0, 2, 0), 4)
    with pytest.raises(ValueError, match="target has 2 tuples; give one per example"):
        select_target(out, [(0, 0, 0), (0, 0, 0)], 4)
    with pytest.raises(TypeError, match="mixes tuples"):
        select_target(out, [(0, 0, 0), 1, 1, 1], 4)
    with pytest.raises(ValueError, match="target -1 is out of range"):
        select_target(flat, -1, 4)
    with pytest.raises(ValueError, match=r"target has shape \(2,\); give one int, or one per example \(4\)"):
        select_target(flat, [0, 1], 4)
    with pytest.raises(ValueError, match=r"shape \(4, 3, 2, 2\) and target=None leaves 12 values per example"):
        select_target(out, None, 4)


@pytest.mark.parametrize(
    "target",
    [(1, 0, 0), [(1, 0, 0), (0, 1, 1), (1, 1, 1), (0, 0, 0)]],
    ids=["tuple", "list of tuples"],
)
def test_tuple_targets_match_captum(target):
    net = model(Stacked)
    x, b = torch.randn(4, 3, dtype=DTYPE), torch.randn(4, 3, dtype=DTYPE)
    ours = DeepLift(net, eps=EPS).attribute(x, b, target=target, return_convergence_delta=True)
    close(ours, captum(captum_attr.DeepLift(net), grad(x), b, target=target, return_convergence_delta=True))
    close(
        IntegratedGradients(net).attribute(x, b, target=target, n_steps=10, internal_batch_size=8),
        captum(captum_attr.IntegratedGradients(net), x, b, target=target, n_steps=10, internal_batch_size=8),
        **FLOAT32,
    )
    close(
        Occlusion(net).attribute(x, (2,), baselines=b, target=target, perturbations_per_eval=2),
        captum(captum_attr.Occlusion(net), x, (2,), baselines=b, target=target, perturbations_per_eval=2),
        **FLOAT32,
    )
    close(
        LayerDeepLift(net, net.relu, eps=EPS).attribute(x, b, target=target),
        captum(captum_attr.LayerDeepLift(net, net.relu), grad(x), b, target=target),
    )
    refs = torch.randn(3, 3, dtype=DTYPE)
    close(
        DeepLiftShap(net, eps=EPS, batch_size=5).attribute(x, refs, target=target, return_convergence_delta=True),
        captum(captum_attr.DeepLiftShap(net), grad(x), refs, target=target, return_convergence_delta=True),
    )
    smooth = NoiseTunnel(Saliency(net)).attribute(x, nt_type="smoothgrad", nt_samples=3, stdevs=0.0, target=target)
    close(smooth, captum(captum_attr.Saliency(net), x, target=target))


@pytest.mark.parametrize("target", [1, (1, 0), [(1, 0), (0, 0), (1, 0)], [1, 0, 1]])
def test_outputs_with_trailing_dimensions_of_size_one(target):
    """Outputs ``(batch, T, 1)`` (tangermeme's models): an int picks ``output[:, t]``, one value."""
    net = model(Stacked, narrow=True)
    x, b = torch.randn(3, 3, dtype=DTYPE), torch.randn(3, 3, dtype=DTYPE)
    ours = DeepLift(net, eps=EPS).attribute(x, b, target=target, return_convergence_delta=True)
    # the same explanation of the flat (batch, T) model with the target's row index
    flat = model(Stacked, narrow=False)
    flat.load_state_dict(net.state_dict())
    rows = [t[0] for t in target] if isinstance(target, list) and isinstance(target[0], tuple) else target
    rows = rows[0] if isinstance(rows, tuple) else rows
    expected = DeepLift(lambda v: flat(v)[:, :, 0, 0], eps=EPS).attribute(
        x, b, target=rows, return_convergence_delta=True
    )
    close(ours, expected)
    if not (isinstance(target, list) and isinstance(target[0], int)):  # Captum needs 2-D outputs for those
        close(ours, captum(captum_attr.DeepLift(net), grad(x), b, target=target, return_convergence_delta=True))


def test_one_output_per_example_in_any_shape():
    net = model(OneOutput)
    x, b = torch.randn(5, 3, dtype=DTYPE), torch.randn(5, 3, dtype=DTYPE)
    close(
        DeepLift(net, eps=EPS).attribute(x, b, return_convergence_delta=True),
        captum(captum_attr.DeepLift(net), grad(x), b, return_convergence_delta=True),
    )
    ig = IntegratedGradients(net).attribute(x, b, n_steps=8, return_convergence_delta=True)
    ig_captum = captum(captum_attr.IntegratedGradients(net), x, b, n_steps=8, return_convergence_delta=True)
    close(ig[0], ig_captum[0], **FLOAT32)
    close(ig[1], ig_captum[1], rtol=0, atol=DELTA_FLOAT32)
    close(Saliency(net).attribute(x), captum(captum_attr.Saliency(net), x))
    close(Occlusion(net).attribute(x, (1,)), captum(captum_attr.Occlusion(net), x, (1,)), **FLOAT32)
    close(
        LayerGradCam(net, net.relu).attribute(x),
        captum(captum_attr.LayerGradCam(net, net.relu), x),
    )
    close(
        DeepLift(net).compute_convergence_delta(x, b, x), captum_attr.DeepLift(net).compute_convergence_delta(x, b, x)
    )


def test_tuple_target_on_a_functional_model():
    """Captum's DeepLift is wrong through F.relu; the tuple target must pick what a wrapper picks."""
    net = model(Stacked, functional=True)
    x, b = torch.randn(4, 3, dtype=DTYPE), torch.randn(4, 3, dtype=DTYPE)
    ours = DeepLift(net, strict=True).attribute(x, b, target=(0, 1, 1), return_convergence_delta=True)
    close(ours, DeepLift(lambda v: net(v)[:, 0, 1, 1:]).attribute(x, b, return_convergence_delta=True))
    per_example = [(0, 1, 1), (1, 0, 1), (0, 0, 0), (1, 1, 0)]
    picked = DeepLift(net).attribute(x, b, target=per_example)
    for n, t in enumerate(per_example):
        close(picked[n : n + 1], DeepLift(net).attribute(x[n : n + 1], b[n : n + 1], target=t))


# --------------------------------------------------------------------------------------------------
# 4. Occlusion of integer inputs


def test_occlusion_of_integer_inputs_matches_captum():
    net = IntegerModel()
    inputs = (torch.tensor([[-10, 4], [3, 7]]), torch.tensor([[-5, 1], [1, 2]]))
    windows = ((1,), (1,))
    ours = Occlusion(net).attribute(inputs, windows, target=1)
    close(ours, captum(captum_attr.Occlusion(net), inputs, windows, target=1))
    floats = tuple(x.to(DTYPE) for x in inputs)
    close(ours, Occlusion(net).attribute(floats, windows, target=1))  # the same numbers as floats
    as_float = Occlusion(lambda *v: net(*v).to(DTYPE)).attribute(inputs, windows, baselines=(1, 2), target=0)
    close(
        as_float,
        captum(captum_attr.Occlusion(lambda *v: net(*v).to(DTYPE)), inputs, windows, baselines=(1, 2), target=0),
    )


def test_integer_inputs_are_still_refused_where_gradients_are_taken():
    net = IntegerModel()
    inputs = (torch.tensor([[-10, 4], [3, 7]]), torch.tensor([[-5, 1], [1, 2]]))
    for method in (DeepLift(net), Saliency(net), IntegratedGradients(net)):
        with pytest.raises(TypeError, match=r"inputs\[0\] has dtype torch.int64; attributions to the inputs need"):
            method.attribute(inputs, target=0)


# --------------------------------------------------------------------------------------------------
# 5. DeepLiftShap's baseline function


def test_a_baseline_function_with_no_argument():
    net = model(Split)
    x = torch.randn(3, 3, dtype=DTYPE)
    refs = torch.randn(4, 3, dtype=DTYPE)

    def gen_baselines():
        return refs

    def gen_from_inputs(inputs):
        return torch.cat([inputs, inputs - 1.0])

    for fn in (gen_baselines, gen_from_inputs):
        ours = DeepLiftShap(net, eps=EPS).attribute(x, fn, target=1, return_convergence_delta=True)
        close(ours, captum(captum_attr.DeepLiftShap(net), grad(x), fn, target=1, return_convergence_delta=True))
        close(
            ours,
            DeepLiftShap(net, eps=EPS).attribute(
                x, fn() if fn is gen_baselines else fn(x), target=1, return_convergence_delta=True
            ),
        )


def test_a_baseline_function_on_a_functional_model():
    net = model(Split, functional=True)
    x = torch.randn(3, 3, dtype=DTYPE)
    refs = (torch.randn(2, 3, dtype=DTYPE),)
    close(DeepLiftShap(net).attribute((x,), lambda: refs, target=0), DeepLiftShap(net).attribute((x,), refs, target=0))
    close(
        DeepLiftShap(net).attribute((x,), lambda inputs: (inputs[0][:2] * 0.5,), target=0),
        DeepLiftShap(net).attribute((x,), (x[:2] * 0.5,), target=0),
    )


# --------------------------------------------------------------------------------------------------
# 6. a layer with several activation tensors


@pytest.mark.parametrize("attribute_to_layer_input", [False, True])
def test_a_module_returning_a_tuple_matches_captum(attribute_to_layer_input):
    net = model(Split)
    x, b = torch.randn(4, 3, dtype=DTYPE), torch.randn(4, 3, dtype=DTYPE)
    kwargs = dict(target=1, attribute_to_layer_input=attribute_to_layer_input)
    ours = LayerDeepLift(net, net.pair, eps=EPS).attribute(x, b, return_convergence_delta=True, **kwargs)
    theirs = captum(captum_attr.LayerDeepLift(net, net.pair), grad(x), b, return_convergence_delta=True, **kwargs)
    assert isinstance(ours[0], tuple) and len(ours[0]) == 2
    close(ours, theirs)
    close(
        LayerGradCam(net, net.pair).attribute(x, **kwargs),
        captum(captum_attr.LayerGradCam(net, net.pair), grad(x), **kwargs),
    )
    close(
        InternalInfluence(net, net.pair).attribute(x, b, n_steps=6, **kwargs),
        captum(captum_attr.InternalInfluence(net, net.pair), x, b, n_steps=6, **kwargs),
        **FLOAT32,
    )


def test_a_functional_module_returning_a_tuple_is_its_tails_deeplift():
    """The outputs come back in the order the module returns them, although it computes the second
    first; each is the tail model's DeepLIFT from the pair on (all paths run through the pair)."""
    net = model(Split, functional=True)
    x, b = torch.randn(4, 3, dtype=DTYPE), torch.randn(4, 3, dtype=DTYPE)
    (cp, cq), delta = LayerDeepLift(net, net.pair).attribute(x, b, target=0, return_convergence_delta=True)
    with torch.no_grad():
        p, q = net.pair(net.lin1(x), x * 3.0)
        p0, q0 = net.pair(net.lin1(b), b * 3.0)
    close((cp, cq), DeepLift(Tail(net)).attribute((p, q), (p0, q0), target=0))
    close(delta, torch.zeros(4, dtype=DTYPE))
    multipliers = LayerDeepLift(net, net.pair, multiply_by_inputs=False).attribute(x, b, target=0)
    close(multipliers, DeepLift(Tail(net), multiply_by_inputs=False).attribute((p, q), (p0, q0), target=0))
    # inputs, in the order the module takes them (it reads b first)
    (ca, cb), delta = LayerDeepLift(net, net.pair).attribute(
        x, b, target=0, attribute_to_layer_input=True, return_convergence_delta=True
    )
    with torch.no_grad():
        a, a0 = net.lin1(x), net.lin1(b)

    class FromPairInputs(nn.Module):
        def forward(self, a, bb):
            return Tail(net)(*net.pair(a, bb))

    close((ca, cb), DeepLift(FromPairInputs()).attribute((a, x * 3.0), (a0, b * 3.0), target=0))


def test_grad_cam_is_not_multiplied_by_inputs_as_captums():
    net = model(Split)
    from deltalift import GuidedGradCam

    for ours, theirs in ((LayerGradCam, captum_attr.LayerGradCam), (GuidedGradCam, captum_attr.GuidedGradCam)):
        assert ours(net, net.relu).multiplies_by_inputs is theirs(net, net.relu).multiplies_by_inputs is False


def test_methods_that_read_one_activation_say_so():
    net = model(Split)
    x = torch.randn(2, 3, dtype=DTYPE)
    with pytest.raises(ValueError, match=r"the layer has 2 activation tensors .*pass one by graph node name"):
        NeuronDeepLift(net, net.pair).attribute(x, 0)
    with pytest.raises(ValueError, match="Guided Grad-CAM upsamples one map"):
        from deltalift import GuidedGradCam

        GuidedGradCam(net, net.pair).attribute(x, target=0)


# --------------------------------------------------------------------------------------------------
# 7. a partial neuron_selector


def test_a_neuron_selector_may_leave_out_dimensions_of_size_one():
    net = model(PoolNet)
    x = torch.ones(2, 4, dtype=DTYPE)
    b = torch.tensor([[1, 2, 3, 9], [4, 8, 6, 7]], dtype=DTYPE)
    for selector in (0, (0,), (0, 0)):
        ours = NeuronDeepLift(net, net.pool1, eps=EPS).attribute(x, selector, baselines=b)
        close(ours, captum(captum_attr.NeuronDeepLift(net, net.pool1), grad(x), selector, baselines=b))
    close(
        NeuronDeepLift(net, net.lin2, eps=EPS).attribute(x, 0, baselines=b, attribute_to_neuron_input=True),
        captum(captum_attr.NeuronDeepLift(net, net.lin2), grad(x), 0, baselines=b, attribute_to_neuron_input=True),
    )


def test_neuron_selectors_with_slices_match_captum():
    net = model(ConvNet)
    x, b = torch.randn(3, 2, 6, dtype=DTYPE), torch.randn(3, 2, 6, dtype=DTYPE)
    for selector in ((1, 2), (1, slice(0, 2)), (slice(None), 3)):
        ours = NeuronDeepLift(net, net.relu, eps=EPS).attribute(x, selector, baselines=b)
        close(ours, captum(captum_attr.NeuronDeepLift(net, net.relu), grad(x), selector, baselines=b))
    with pytest.raises(ValueError, match=r"neuron_selector 1 selects 4 values per example .*index every dimension"):
        NeuronDeepLift(net, net.relu).attribute(x, 1)


def test_a_partial_neuron_selector_at_a_functional_layer():
    """A functional max (``amax`` keeping its dimension) picked by graph node name: an int
    selector leaves out the last dimension, of size one, and equals the callable that picks the
    same value."""

    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin1 = nn.Linear(4, 4)

        def forward(self, x):
            return torch.tanh(self.lin1(x.unsqueeze(1))).amax(-1, keepdim=True)[:, 0, :] * 2.0

    net = model(Functional)
    x, b = torch.randn(3, 4, dtype=DTYPE), torch.randn(3, 4, dtype=DTYPE)
    ours = NeuronDeepLift(net, "amax").attribute(x, 0, baselines=b, return_convergence_delta=True)
    close(
        ours, NeuronDeepLift(net, "amax").attribute(x, lambda a: a[:, 0, 0], baselines=b, return_convergence_delta=True)
    )
    close(ours[1], torch.zeros(3, dtype=DTYPE))
    assert ours[0].abs().sum() > 0


# --------------------------------------------------------------------------------------------------
# 8. token ids at an embedding layer


def test_token_ids_at_the_embedding_layer_match_captum():
    net = model(Tokens)
    ids = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0], [7, 8, 9, 6]])
    ref = torch.zeros_like(ids)
    ours = LayerDeepLift(net, net.embeddings, eps=EPS).attribute(ids, ref, target=1, return_convergence_delta=True)
    theirs = captum(captum_attr.LayerDeepLift(net, net.embeddings), ids, ref, target=1, return_convergence_delta=True)
    close(ours, theirs)
    close(ours[1], torch.zeros(3, dtype=DTYPE))  # every path runs through the embeddings
    close(
        LayerGradCam(net, net.embeddings).attribute(ids, target=0),
        captum(captum_attr.LayerGradCam(net, net.embeddings), ids, target=0),
    )
    # the embedded tensor explained directly gives the same
    with torch.no_grad():
        e, e0 = net.embeddings(ids), net.embeddings(ref)
    mask = (ids != 0).to(DTYPE)
    close(ours[0], DeepLift(FromEmbeddings(net), eps=EPS).attribute(e, e0, target=1, additional_forward_args=(mask,)))


def test_token_ids_with_a_padding_mask_computed_from_them():
    """Functional ReLU and a mask computed from the ids (Captum takes plain gradients through both):
    the embeddings' contributions are those of the model explained from the embeddings with the
    mask as a second input, and the delta is what the mask contributes (it bypasses the layer)."""
    net = model(Tokens, functional=True, mask_padding=True)
    ids = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0], [7, 8, 9, 6]])
    ref = torch.tensor([[1, 0, 0, 0], [0, 0, 0, 0], [7, 8, 9, 0]])
    ours, delta = LayerDeepLift(net, net.embeddings).attribute(ids, ref, target=0, return_convergence_delta=True)
    with torch.no_grad():
        e, e0 = net.embeddings(ids), net.embeddings(ref)
    mask, mask0 = (ids != 0).to(DTYPE), (ref != 0).to(DTYPE)
    (ce, cm), whole = DeepLift(FromEmbeddings(net), strict=True).attribute(
        (e, mask), (e0, mask0), target=0, return_convergence_delta=True
    )
    close(ours, ce)
    close(whole, torch.zeros(3, dtype=DTYPE))
    close(delta, -cm.sum(1))
    by_node = LayerDeepLift(net, "embedding").attribute(ids, ref, target=0)  # the lookup's graph node
    close(by_node, ours)


def test_integer_inputs_elsewhere_get_clear_errors():
    net = model(Tokens)
    ids = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0]])
    with pytest.raises(TypeError, match=r"LayerDeepLift\(model, model.embedding\)"):
        DeepLift(net).attribute(ids, target=0)
    with pytest.raises(TypeError, match="attributions to the inputs need floating-point inputs"):
        NeuronDeepLift(net, net.dense).attribute(ids, (0, 1))
    with pytest.raises(TypeError, match="internal influence integrates along the straight path"):
        InternalInfluence(net, net.embeddings).attribute(ids, target=0)
    with pytest.raises(ValueError, match="activation has dtype torch.int64"):
        LayerDeepLift(net, net.embeddings).attribute(ids, target=0, attribute_to_layer_input=True)
    with pytest.raises(ValueError, match=r"not one floating tensor \(dtype torch.int64\)"):
        LayerGradCam(net, net.embeddings).attribute(ids, target=0, attribute_to_layer_input=True)


def test_attribute_future_raises_not_implemented_as_captums():
    """Captum's asynchronous ``attribute_future`` is unimplemented for these methods in Captum
    itself; deltalift's classes raise the same ``NotImplementedError`` rather than an
    ``AttributeError``, so code written against Captum meets the same behaviour."""
    import deltalift.methods

    model = nn.Linear(3, 2)
    for name in ("Saliency", "InputXGradient", "IntegratedGradients", "DeepLift", "Occlusion", "GradientShap"):
        with pytest.raises(NotImplementedError):
            getattr(captum_attr, name)(model).attribute_future()
        with pytest.raises(NotImplementedError, match="call attribute"):
            getattr(deltalift.methods, name)(model).attribute_future()


class _FiveWaySoftmax(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(5, 5)
        self.softmax = nn.Softmax(dim=1)
        with torch.no_grad():
            self.lin.weight.copy_(torch.eye(5))
            self.lin.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.softmax(self.lin(x))


def test_captums_softmax_rule_is_not_exact_where_deltalifts_is():
    """docs/captum-differences.md: softmax of x = (4, 2, 0, 0, 0) against zeros (float64)."""
    model = _FiveWaySoftmax().to(DTYPE)
    x = torch.tensor([[4.0, 2.0, 0.0, 0.0, 0.0]], dtype=DTYPE)
    for target, captums_error in ((0, -0.0968), (1, 0.1269)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, theirs = captum_attr.DeepLift(model).attribute(x, 0.0, target=target, return_convergence_delta=True)
        _, ours = DeepLift(model).attribute(x, 0.0, target=target, return_convergence_delta=True)
        assert abs(float(theirs) - captums_error) < 1e-3
        assert abs(float(ours)) < 1e-14


def test_captums_integrated_gradients_delta_without_multiplying_is_not_a_delta():
    """docs/captum-differences.md: with ``multiply_by_inputs=False`` Captum's delta sums the
    path-averaged gradients; deltalift's is that of the contributions."""
    from captum.testing.helpers.basic_models import BasicModel2

    model = BasicModel2()
    inputs = (torch.tensor([3.0], dtype=DTYPE), torch.tensor([1.0], dtype=DTYPE))
    zeros = (torch.zeros(1, dtype=DTYPE), torch.zeros(1, dtype=DTYPE))
    kwargs = {"n_steps": 500, "method": "riemann_right", "return_convergence_delta": True}
    _, theirs = captum_attr.IntegratedGradients(model, multiply_by_inputs=False).attribute(inputs, zeros, **kwargs)
    gradients, ours = IntegratedGradients(model, multiply_by_inputs=False).attribute(inputs, zeros, **kwargs)
    assert abs(float(theirs) + 1.0) < 1e-2
    assert abs(float(ours)) < 1e-2
    torch.testing.assert_close(gradients[0], torch.tensor([0.5], dtype=DTYPE), rtol=0, atol=1e-2)
