"""The layout in which the DeepLIFT walk runs 1-D convolutions on CPU: length-major.

PyTorch runs a 1-D convolution of an ``(N, C, L)`` tensor as a 2-D one of its ``(N, C, 1, L)``
view, in the channels-first (NCHW) layout, since a 3-D tensor has no channels-last format; on
CPU, oneDNN's channels-last (NHWC) kernels are faster. Measured on 2 Xeon cores (AVX-512),
float32, forward and transposed alike: a BPNet-like dilated layer (64 to 64 channels, width 3,
1000 bp) 23 ms against 41 ms at 160 rows, 1.9 against 2.8 ms at 20; a 4 to 16 channel layer of
width 7 0.15 against 0.54 ms; 300 to 200 channels of width 19 33 against 43 ms; bfloat16 2.5x,
float64 1.2-1.7x.  Copying to and from that layout around each convolution costs what it saves,
so the walk keeps it: :func:`convolution` returns ``(N, C, L)`` tensors with strides
``(L * C, 1, C)`` (length-major), which element-wise rules preserve and the next 1-D
convolution reads without a copy.

What the rest of the walk must allow for: a captured ``view`` of such a tensor may need a copy
(the walk evaluates views as ``reshape``), and the attributions handed back are given
row-major strides (:func:`deltalift.inputs.row_major`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

Tensor = torch.Tensor
aten = torch.ops.aten


def runs_length_major(x: Tensor) -> bool:
    """Whether a convolution of ``x`` runs as a channels-last 2-D convolution: a 1-D one on CPU
    (floating point, with oneDNN available and enabled)."""
    return (
        x.ndim == 3
        and x.device.type == "cpu"
        and x.is_floating_point()
        and torch.backends.mkldnn.is_available()
        and bool(torch.backends.mkldnn.enabled)
    )


def convolution(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    transposed: bool,
    output_padding: Sequence[int],
    groups: int,
) -> Tensor:
    """``aten.convolution`` with its values; a 1-D convolution on CPU (:func:`runs_length_major`)
    runs as the channels-last 2-D convolution of ``x.unsqueeze(2)`` and returns a length-major
    tensor (a copy of ``x`` only where it is not length-major already).  The weight is made
    channels-last too: left channels-first, the DeepLIFT-SHAP benchmark's call took 0.72 s
    instead of 0.58 s."""
    if not runs_length_major(x):
        return aten.convolution(x, weight, bias, stride, padding, dilation, transposed, output_padding, groups)
    channels_last = torch.channels_last
    out = aten.convolution(
        x.unsqueeze(2).contiguous(memory_format=channels_last),
        weight.unsqueeze(2).contiguous(memory_format=channels_last),
        bias,
        [1, *stride],
        [0, *padding],
        [1, *dilation],
        transposed,
        [0, *output_padding],
        groups,
    )
    return out.squeeze(2)
