"""Tiny builds of real model code (Hugging Face ``transformers``, ``timm``, ``bpnet-lite``), random weights.

Every builder returns a module in eval mode whose forward takes one float tensor (embeddings,
images or one-hot DNA) and returns one tensor ``(batch, k)``; nothing is downloaded (every model
is built from a config).  The packages are imported inside the builders, so that a missing
package only affects its own models (the tests call ``pytest.importorskip(spec.package)``).

Sizes are cut (hidden sizes 16-32, one or two layers or blocks per stage, 32x32 images, 128 bp
sequences) to keep ``torch.export`` fast; the blocks themselves are the libraries' own code.
Weights that default initialisation leaves trivial (constant norm weights, zero biases and heads,
zero-initialised residual branches) are re-drawn, and batch-norm statistics are set from a random
batch, so that every op sees non-zero, input-dependent values.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

SEQ = 6  # tokens of the text models
IMAGE = 32  # side of the images
DNA = 128  # length of the one-hot sequences


@dataclass(frozen=True)
class Spec:
    """A model of the matrix: its package, how to build it, and its input."""

    name: str
    package: str  # "transformers" | "timm" | "bpnetlite"
    build: Callable[[], nn.Module]  # float32, eval mode, weights re-drawn
    input_kind: str  # "embeddings" | "image" | "dna"
    input_shape: tuple[int, ...]  # without the batch dimension
    target: int
    #: Where the library's code computes in float32 even when the model is cast to float64 (the
    #: model then rounds to float32 there, and summation-to-delta holds only to float32's
    #: precision); empty when the model computes in float64 throughout.
    float32_inside: str = ""


# --------------------------------------------------------------------------------------------------
# weights and inputs


def seed_of(name: str) -> int:
    return zlib.crc32(name.encode())


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Re-draw what default initialisation leaves trivial: constant vectors (norm weights and
    biases, layer scales) and all-zero parameters (biases, heads, zero-initialised last layers of
    residual branches).  With them a zero reference would give trivially zero activations and a
    residual block would be the identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            for name, p in module.named_parameters(recurse=False):
                if not p.is_floating_point() or p.numel() == 0:
                    continue
                if p.ndim == 1 and bool((p == p.flatten()[0]).all()):
                    if "weight" in name or "gamma" in name or "scale" in name:
                        p.uniform_(0.5, 1.5, generator=g)
                    else:
                        p.normal_(0.0, 0.2, generator=g)
                elif bool((p == 0).all()):
                    fan_in = p[0].numel() if p.ndim >= 2 else 25
                    p.normal_(0.0, fan_in**-0.5, generator=g)
    return model


def calibrate_batch_norm_(model: nn.Module, example: torch.Tensor) -> None:
    """Set batch-norm running statistics to those of a random batch (as training would)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: after one batch, the batch's statistics
    model.train()
    with torch.no_grad():
        model(example)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.eval()


def make_input(spec: Spec, batch: int, generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """A random input of the model: embeddings ~ N(0, 1), images ~ N(0, 1), random one-hot DNA."""
    shape = (batch, *spec.input_shape)
    if spec.input_kind == "dna":
        index = torch.randint(0, 4, (batch, spec.input_shape[1]), generator=generator)
        return nn.functional.one_hot(index, 4).transpose(1, 2).to(dtype).contiguous()
    return torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype)


def finish(model: nn.Module, spec_name: str, input_kind: str, input_shape: tuple[int, ...]) -> nn.Module:
    randomize_(model, seed_of(spec_name))
    model.eval()
    if input_kind == "image":
        g = torch.Generator().manual_seed(seed_of(spec_name) + 1)
        calibrate_batch_norm_(model, torch.randn((8, *input_shape), generator=g))
    return model.eval()


# --------------------------------------------------------------------------------------------------
# transformers: explained at the embeddings


class EmbeddingsToLogits(nn.Module):
    """``inputs_embeds -> logits`` of a Hugging Face model (``(batch, k)``)."""

    def __init__(self, model: nn.Module, head: nn.Module | None = None) -> None:
        super().__init__()
        self.model = model
        self.head = head

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        out = self.model(inputs_embeds=embeds)
        if self.head is None:
            return out.logits
        return self.head(out.last_hidden_state[:, 0])  # the first token's hidden state, projected


class PixelsToLogits(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


HIDDEN = 32
TEXT_COMMON = dict(initializer_range=0.2)


def _bert() -> nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=50,
        hidden_size=HIDDEN,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=16,
        num_labels=3,
        **TEXT_COMMON,
    )
    config._attn_implementation = "eager"
    return EmbeddingsToLogits(BertForSequenceClassification(config))


def _distilbert() -> nn.Module:
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    config = DistilBertConfig(
        vocab_size=50,
        dim=HIDDEN,
        n_layers=1,
        n_heads=2,
        hidden_dim=64,
        max_position_embeddings=16,
        num_labels=3,
        **TEXT_COMMON,
    )
    config._attn_implementation = "eager"
    return EmbeddingsToLogits(DistilBertForSequenceClassification(config))


def _roberta() -> nn.Module:
    from transformers import RobertaConfig, RobertaForSequenceClassification

    config = RobertaConfig(
        vocab_size=50,
        hidden_size=HIDDEN,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=20,
        num_labels=3,
        pad_token_id=1,
        **TEXT_COMMON,
    )
    config._attn_implementation = "eager"
    return EmbeddingsToLogits(RobertaForSequenceClassification(config))


def _gpt2(attn: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        from transformers import GPT2Config, GPT2ForSequenceClassification

        config = GPT2Config(
            vocab_size=50,
            n_embd=HIDDEN,
            n_layer=2,
            n_head=2,
            n_positions=16,
            num_labels=3,
            pad_token_id=0,
            bos_token_id=0,
            eos_token_id=0,
            **TEXT_COMMON,
        )
        config._attn_implementation = attn
        return EmbeddingsToLogits(GPT2ForSequenceClassification(config))

    return build


def _llama() -> nn.Module:
    from transformers import LlamaConfig, LlamaForSequenceClassification

    config = LlamaConfig(
        vocab_size=50,
        hidden_size=HIDDEN,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=16,
        num_labels=3,
        pad_token_id=0,
        **TEXT_COMMON,
    )
    config._attn_implementation = "eager"
    return EmbeddingsToLogits(LlamaForSequenceClassification(config))


def _t5_encoder() -> nn.Module:
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=50,
        d_model=HIDDEN,
        d_kv=8,
        d_ff=64,
        num_layers=1,
        num_heads=2,
        relative_attention_num_buckets=8,
        initializer_factor=1.0,
    )
    config._attn_implementation = "eager"
    return EmbeddingsToLogits(T5EncoderModel(config), head=nn.Linear(HIDDEN, 3))


def _hf_vit() -> nn.Module:
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(
        image_size=IMAGE,
        patch_size=8,
        hidden_size=HIDDEN,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=3,
        **TEXT_COMMON,
    )
    config._attn_implementation = "eager"
    return PixelsToLogits(ViTForImageClassification(config))


# --------------------------------------------------------------------------------------------------
# timm


def _timm(name: str, **kwargs: Any) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import timm

        return timm.create_model(name, pretrained=False, num_classes=3, **kwargs)

    return build


def _timm_ghostnet() -> nn.Module:
    # timm's GhostNet with three of its stages (one with squeeze-excite); the registered
    # constructors fix the stage list, so the class is called with a shortened one.
    from timm.models.ghostnet import GhostNet

    cfgs = [[[3, 16, 16, 0, 1]], [[3, 48, 24, 0, 2]], [[5, 72, 40, 0.25, 2]]]
    return GhostNet(cfgs, num_classes=3, width=0.5)


def _timm_mixer(gated: bool) -> Callable[[], nn.Module]:
    # timm's MlpMixer (the class behind mixer_* and gmlp_*; their constructors fix the depth)
    def build() -> nn.Module:
        from timm.layers import GatedMlp
        from timm.models.mlp_mixer import MlpMixer, SpatialGatingBlock

        if gated:  # as gmlp_ti16_224
            return MlpMixer(
                num_classes=3,
                img_size=IMAGE,
                patch_size=8,
                num_blocks=1,
                embed_dim=32,
                mlp_ratio=6,
                block_layer=SpatialGatingBlock,
                mlp_layer=GatedMlp,
            )
        return MlpMixer(num_classes=3, img_size=IMAGE, patch_size=8, num_blocks=1, embed_dim=32)

    return build


def _timm_mobilevit() -> nn.Module:
    import timm
    from timm.models.mobilevit import _inverted_residual_block, _mobilevit_block

    blocks = (
        _inverted_residual_block(d=1, c=16, s=1, br=2.0),
        _mobilevit_block(d=1, c=24, s=2, transformer_dim=32, transformer_depth=1, patch_size=2, br=2.0),
    )
    return timm.create_model("mobilevit_xxs", pretrained=False, num_classes=3, blocks=blocks, num_features=64)


# --------------------------------------------------------------------------------------------------
# bpnet-lite: its count and profile heads, through its own wrappers


def _bpnet(head: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        from bpnetlite.bpnet import BPNet, CountWrapper, ProfileWrapper

        model = BPNet(n_filters=8, n_layers=2, n_outputs=2, n_control_tracks=0, verbose=False)
        return (CountWrapper if head == "count" else ProfileWrapper)(model)

    return build


def _chrombpnet(head: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        from bpnetlite.bpnet import BPNet, CountWrapper, ProfileWrapper
        from bpnetlite.chrombpnet import ChromBPNet

        bias = BPNet(n_filters=4, n_layers=1, n_outputs=1, n_control_tracks=0, verbose=False)
        accessibility = BPNet(n_filters=8, n_layers=2, n_outputs=1, n_control_tracks=0, verbose=False)
        model = ChromBPNet(bias, accessibility)
        return (CountWrapper if head == "count" else ProfileWrapper)(model)

    return build


# --------------------------------------------------------------------------------------------------
# the matrix

_EMB = ("embeddings", (SEQ, HIDDEN))
_IMG = ("image", (3, IMAGE, IMAGE))
_DNA = ("dna", (4, DNA))

_RAW: list[tuple[str, str, Callable[[], nn.Module], tuple[str, tuple[int, ...]], int]] = [
    # transformers
    ("hf_bert", "transformers", _bert, _EMB, 1),
    ("hf_distilbert", "transformers", _distilbert, _EMB, 1),
    ("hf_roberta", "transformers", _roberta, _EMB, 1),
    ("hf_gpt2_eager", "transformers", _gpt2("eager"), _EMB, 1),
    ("hf_gpt2_sdpa", "transformers", _gpt2("sdpa"), _EMB, 1),
    ("hf_llama", "transformers", _llama, _EMB, 1),
    ("hf_t5_encoder", "transformers", _t5_encoder, _EMB, 1),
    ("hf_vit", "transformers", _hf_vit, _IMG, 1),
    # timm
    (
        "timm_vit",
        "timm",
        _timm("vit_tiny_patch16_224", img_size=IMAGE, patch_size=8, embed_dim=32, depth=1, num_heads=2, mlp_ratio=2),
        _IMG,
        1,
    ),
    (
        "timm_deit_distilled",
        "timm",
        _timm(
            "deit_tiny_distilled_patch16_224",
            img_size=IMAGE,
            patch_size=8,
            embed_dim=32,
            depth=1,
            num_heads=2,
            mlp_ratio=2,
        ),
        _IMG,
        1,
    ),
    (
        "timm_swin",
        "timm",
        _timm(
            "swin_tiny_patch4_window7_224",
            img_size=IMAGE,
            patch_size=4,
            window_size=4,
            embed_dim=16,
            depths=(2, 1),
            num_heads=(1, 2),
            mlp_ratio=2,
        ),
        _IMG,
        1,
    ),
    ("timm_convnext", "timm", _timm("convnext_atto", depths=(1, 1, 1, 1), dims=(8, 16, 24, 32)), _IMG, 1),
    ("timm_efficientnet", "timm", _timm("test_efficientnet"), _IMG, 1),
    ("timm_mobilenetv3", "timm", _timm("mobilenetv3_small_050", depth_multiplier=0.1), _IMG, 1),
    ("timm_seresnet18", "timm", _timm("seresnet18", layers=(1, 1, 1, 1)), _IMG, 1),
    ("timm_mixer", "timm", _timm_mixer(False), _IMG, 1),
    ("timm_gmlp", "timm", _timm_mixer(True), _IMG, 1),
    (
        "timm_levit",
        "timm",
        _timm("levit_128s", img_size=IMAGE, embed_dim=(32, 48), key_dim=8, num_heads=(2, 3), depth=(1, 1)),
        _IMG,
        1,
    ),
    (
        "timm_xcit",
        "timm",
        _timm(
            "xcit_nano_12_p16_224", img_size=IMAGE, patch_size=16, embed_dim=32, depth=1, num_heads=2, cls_attn_layers=1
        ),
        _IMG,
        1,
    ),
    (
        "timm_pvt_v2",
        "timm",
        _timm("pvt_v2_b0", depths=(1, 1, 1, 1), embed_dims=(16, 16, 32, 32), num_heads=(1, 1, 2, 2)),
        _IMG,
        1,
    ),
    (
        "timm_maxvit",
        "timm",
        _timm(
            "test_maxvit",
            img_size=IMAGE,
            embed_dim=(16, 32),
            depths=(1, 1),
            block_type=("M", "M"),
            stem_width=(8, 16),
            transformer_dim_head=8,
        ),
        _IMG,
        1,
    ),
    ("timm_mobilevit", "timm", _timm_mobilevit, _IMG, 1),
    ("timm_ghostnet", "timm", _timm_ghostnet, _IMG, 1),
    (
        "timm_nf_regnet",
        "timm",
        _timm("nf_regnet_b0", depths=(1, 1, 1, 1), channels=(16, 32, 48, 64), num_features=64),
        _IMG,
        1,
    ),
    # bpnet-lite
    ("bpnet_count", "bpnetlite", _bpnet("count"), _DNA, 0),
    ("bpnet_profile", "bpnetlite", _bpnet("profile"), _DNA, 0),
    ("chrombpnet_count", "bpnetlite", _chrombpnet("count"), _DNA, 0),
    ("chrombpnet_profile", "bpnetlite", _chrombpnet("profile"), _DNA, 0),
]


#: Checked by exporting each model in float64 and listing the nodes whose value is float32 (and,
#: for these three, by removing the casts: the float64 delta then drops to ~1e-15 relative).
FLOAT32_INSIDE = {
    "hf_llama": "LlamaRMSNorm (hidden_states.to(torch.float32)) and eager attention's softmax(dtype=torch.float32)",
    "hf_t5_encoder": "T5LayerNorm's variance (hidden_states.to(torch.float32).pow(2).mean(-1))",
    "hf_vit": "eager attention's softmax(dtype=torch.float32)",
}

#: The float32 case of each package: one representative model.
FLOAT32_MODELS = ("hf_bert", "timm_efficientnet", "chrombpnet_profile")


def _spec(
    name: str, package: str, raw: Callable[[], nn.Module], kind_shape: tuple[str, tuple[int, ...]], target: int
) -> Spec:
    kind, shape = kind_shape

    def build() -> nn.Module:
        with torch.random.fork_rng():  # the libraries initialise from the global generator
            torch.manual_seed(seed_of(name))
            model = raw()
        return finish(model, name, kind, shape)

    return Spec(name, package, build, kind, shape, target, FLOAT32_INSIDE.get(name, ""))


MODELS: dict[str, Spec] = {raw[0]: _spec(*raw) for raw in _RAW}
