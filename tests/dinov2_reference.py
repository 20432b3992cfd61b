"""The reference implementations featx's DINOv2 backbones are checked against, built with the same random
weights: timm's VisionTransformer (the modules featx wraps) and transformers' Dinov2Model (an independent
implementation: separate q/k/v projections, its own embeddings and attention)."""

from __future__ import annotations

import functools

import timm  # in the test extra: a broken install fails here instead of skipping
import torch

TIMM_NAMES = {"dinov2_vits14": "vit_small_patch14_dinov2", "dinov2_vitb14": "vit_base_patch14_dinov2"}


def _timm_model(arch: str, blocks: int, *, meta: bool) -> torch.nn.Module:
    """timm's model with ``blocks`` blocks, created on the meta device (shapes only), then allocated unless ``meta``."""
    with torch.device("meta"):
        model = timm.create_model(
            TIMM_NAMES[arch], pretrained=False, num_classes=0, depth=blocks, dynamic_img_size=True, weight_init="skip"
        )
    return model if meta else model.to_empty(device="cpu")


@functools.cache
def _random_state(arch: str, seed: int, blocks: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in _timm_model(arch, blocks, meta=True).state_dict().items():
        noise = torch.randn(value.shape, generator=generator)
        if key.endswith(".gamma"):  # LayerScale: large enough that every block changes the tokens
            state[key] = 0.5 + 0.1 * noise
        elif "norm" in key and key.endswith(".weight"):
            state[key] = 1 + 0.1 * noise
        elif key.endswith(".bias"):
            state[key] = 0.1 * noise
        elif key.endswith(".weight"):  # unit-variance outputs: std 1 / sqrt(fan_in)
            state[key] = noise / value[0].numel() ** 0.5
        else:  # cls_token, pos_embed
            state[key] = 0.5 * noise
    return state


def random_state(
    arch: str = "dinov2_vits14", *, blocks: int = 12, seed: int = 0, facebook: bool = False
) -> dict[str, torch.Tensor]:
    """Random weights of a model with ``blocks`` blocks (and the final norm) in timm's key layout, or in
    DINOv2's (``facebook=True``: with ``mask_token``)."""
    state = dict(_random_state(arch, seed, blocks))
    if facebook:
        state["mask_token"] = torch.zeros(1, state["cls_token"].shape[-1])
    return state


def timm_model(arch: str, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """timm's own DINOv2 model (dynamic image size, as DINOv2 is used at any size) holding ``state``."""
    blocks = len({key.split(".")[1] for key in state if key.startswith("blocks.")})
    model = _timm_model(arch, blocks, meta=False)
    model.load_state_dict(state, strict=True)
    return model.eval()


def to_transformers_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm's keys -> transformers' ``Dinov2Model`` keys (transformers 5: split q/k/v projections)."""
    channels = state["cls_token"].shape[-1]
    out = {
        "embeddings.cls_token": state["cls_token"],
        "embeddings.mask_token": torch.zeros(1, channels),
        "embeddings.position_embeddings": state["pos_embed"],
        "embeddings.patch_embeddings.projection.weight": state["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.projection.bias": state["patch_embed.proj.bias"],
        "layernorm.weight": state["norm.weight"],
        "layernorm.bias": state["norm.bias"],
    }
    for block in range(12):
        ours, theirs = f"blocks.{block}.", f"encoder.layer.{block}."
        for part in ("weight", "bias"):
            query, key, value = state[ours + "attn.qkv." + part].chunk(3)  # timm stacks q, k, v in this order
            out[theirs + "attention.q_proj." + part] = query
            out[theirs + "attention.k_proj." + part] = key
            out[theirs + "attention.v_proj." + part] = value
            out[theirs + "attention.o_proj." + part] = state[ours + "attn.proj." + part]
            for name in ("norm1", "norm2", "mlp.fc1", "mlp.fc2"):
                out[theirs + f"{name}." + part] = state[ours + f"{name}." + part]
        out[theirs + "layer_scale1.lambda1"] = state[ours + "ls1.gamma"]
        out[theirs + "layer_scale2.lambda1"] = state[ours + "ls2.gamma"]
    return out


def transformers_model(state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """transformers' ``Dinov2Model`` with the configuration of facebook/dinov2-small or -base, holding ``state``,
    with its eager attention (``softmax(q k^T * scale) v`` written out), not a fused kernel."""
    import transformers  # in the test extra
    channels = state["cls_token"].shape[-1]
    config = transformers.Dinov2Config(
        hidden_size=channels,
        num_hidden_layers=12,
        num_attention_heads=channels // 64,
        mlp_ratio=4,
        image_size=518,
        patch_size=14,
        attn_implementation="eager",
    )
    with torch.device("meta"):
        model = transformers.Dinov2Model(config)
    model = model.to_empty(device="cpu")
    model.load_state_dict(to_transformers_keys(state), strict=True)
    return model.eval()
