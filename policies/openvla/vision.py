"""The fused vision tower: transformers ``Dinov2WithRegistersModel`` and/or ``SiglipVisionModel`` per view.

OpenVLA (prismatic ``PrismaticVisionBackbone``) reads each featurizer's output of block ``depth - 2`` (timm
``get_intermediate_layers(n={depth - 2})``): no final norm, prefix tokens (DINOv2: class + registers) dropped.
DINOv2 and SigLIP features of the same patch are concatenated on the feature axis, views on the token axis.

The transformers modules hold every tensor of the OpenVLA checkpoint (last block, final norm, SigLIP's attention
pool head) so that checkpoint keys map one to one; the unused ones are frozen and never run.
"""

from __future__ import annotations

import torch
from torch import nn

from policies.openvla.config import VisionSpec, VLAConfig


def build_featurizer(kind: str, spec: VisionSpec, config: VLAConfig) -> nn.Module:
    """A transformers ViT for one featurizer (random init unless called under ``no_init_weights``).

    ``kind`` is ``dinov2`` (Dinov2WithRegistersModel: LayerScale, class + register tokens, class position
    embedding slot kept at zero since timm's DINOv2 has ``no_embed_class``) or ``siglip`` (SiglipVisionModel,
    exact GELU as timm's So400m, attention-pool head kept for checkpoint fidelity).
    """
    from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel, SiglipVisionConfig, SiglipVisionModel

    common = dict(
        hidden_size=spec.width,
        num_hidden_layers=spec.depth,
        num_attention_heads=spec.heads,
        image_size=config.image_size,
        patch_size=config.patch_size,
        num_channels=3,
        hidden_act="gelu",
        layer_norm_eps=1e-6,
    )
    if kind == "dinov2":
        cfg = Dinov2WithRegistersConfig(
            **common,
            mlp_ratio=spec.mlp_dim // spec.width,
            qkv_bias=True,
            layerscale_value=1.0,
            num_register_tokens=spec.registers,
        )
        cfg._attn_implementation = config.attn_implementation
        model = Dinov2WithRegistersModel(cfg)
        # The mask token only serves masked-image pretraining; OpenVLA checkpoints do not have it.
        del model.embeddings.mask_token
        with torch.no_grad():
            model.embeddings.position_embeddings[:, 0].zero_()
        return model
    if kind == "siglip":
        cfg = SiglipVisionConfig(**common, intermediate_size=spec.mlp_dim, vision_use_head=True)
        cfg._attn_implementation = config.attn_implementation
        return SiglipVisionModel(cfg)
    raise ValueError(f"unknown featurizer kind {kind!r}; known: ['dinov2', 'siglip']")


def _layers(model: nn.Module, kind: str) -> nn.ModuleList:
    return model.encoder.layer if kind == "dinov2" else model.encoder.layers


def _film_block(layer: nn.Module, kind: str, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """One ViT block with FiLM after the attention residual (OFT ``FiLMedVisionTransformerBlock.forward``).

    Same computation as ``layer(x)`` apart from ``x * (1 + gamma) + beta`` between the two residual branches.
    gamma, beta: (B, width).
    """
    if kind == "dinov2":
        h, _ = layer.attention(layer.norm1(x))
        x = layer.drop_path(layer.layer_scale1(h)) + x
        x = x * (1 + gamma[:, None]) + beta[:, None]
        return layer.drop_path(layer.layer_scale2(layer.mlp(layer.norm2(x)))) + x
    h, _ = layer.self_attn(layer.layer_norm1(x))
    x = x + h
    x = x * (1 + gamma[:, None]) + beta[:, None]
    return x + layer.mlp(layer.layer_norm2(x))


class VisionBackbone(nn.Module):
    """Per-view patch features of 1-4 views.

    Attributes ``featurizer`` (DINOv2, or the single encoder) and ``fused_featurizer`` (SigLIP, dinosiglip only)
    are the transformers models; their names match OpenVLA's ``vision_backbone.{featurizer,fused_featurizer}``.
    """

    def __init__(self, config: VLAConfig) -> None:
        super().__init__()
        self.kinds: dict[str, str] = {}
        self.n_prefix: dict[str, int] = {}
        for name, kind, spec in config.featurizers:
            self.add_module(name, build_featurizer(kind, spec, config))
            self.kinds[name] = kind
            self.n_prefix[name] = 1 + spec.registers if kind == "dinov2" else 0
        self.channels_per_view = config.channels_per_view
        self.freeze_unused()

    def freeze_unused(self) -> None:
        """``requires_grad=False`` on the tensors the forward never uses (last block, final norm, pool head)."""
        for name, kind in self.kinds.items():
            model = getattr(self, name)
            layers = _layers(model, kind)
            unused = [layers[-1], model.layernorm if kind == "dinov2" else model.post_layernorm]
            if kind == "siglip":
                unused.append(model.head)
            for module in unused:
                module.requires_grad_(False)

    def featurizer_blocks(self, name: str) -> int:
        """Blocks run for featurizer ``name``: depth - 1 (the output of block index depth-2 is the feature)."""
        return len(_layers(getattr(self, name), self.kinds[name])) - 1

    def forward(self, pixel_values: torch.Tensor, film: dict[str, list] | None = None) -> torch.Tensor:
        """Patch features of every view.

        Args:
            pixel_values: (B, V * C, S, S) float, per view C = 3 channels per featurizer in order (DINOv2-normalized
                RGB, SigLIP-normalized RGB) -- OFT's multi-view layout.
            film: featurizer name -> per-block list of (gamma, beta), each (B, width); None: no FiLM.

        Returns:
            (B, V * N, vision_dim) with N = (S / patch)^2 patches per view, views in input order.

        Raises:
            ValueError: the channel count is not a multiple of C.
        """
        b, c, s, _ = pixel_values.shape
        if c % self.channels_per_view:
            raise ValueError(
                f"pixel_values has {c} channels; expected a multiple of {self.channels_per_view} "
                f"({self.channels_per_view} per view)"
            )
        v = c // self.channels_per_view
        # Views become batch entries: (B, V*C, S, S) -> (B*V, C, S, S); the ViTs see each view independently.
        x = pixel_values.reshape(b * v, self.channels_per_view, s, s)
        feats = []
        for i, (name, kind) in enumerate(self.kinds.items()):
            params = (
                None
                if film is None
                else [(g.repeat_interleave(v, 0), bt.repeat_interleave(v, 0)) for g, bt in film[name]]
            )
            feats.append(self._features(name, kind, x[:, 3 * i : 3 * i + 3], params))
        out = torch.cat(feats, dim=-1)  # (B*V, N, vision_dim)
        return out.reshape(b, v * out.shape[1], out.shape[2])

    def _features(self, name: str, kind: str, pixels: torch.Tensor, film: list | None) -> torch.Tensor:
        model = getattr(self, name)
        x = model.embeddings(pixels.to(model.dtype))
        for i, layer in enumerate(_layers(model, kind)[: self.featurizer_blocks(name)]):
            x = layer(x, None) if film is None else _film_block(layer, kind, x, *film[i])
        return x[:, self.n_prefix[name] :]
