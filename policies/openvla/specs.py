"""Dimensions of the VLA's parts: a ViT featurizer (:class:`VisionSpec`) and the Llama LLM (:class:`LLMSpec`),
with the real OpenVLA-7B sizes and the tiny preset's.

Sources: openvla/openvla-7b's ``config.json`` (DINOv2 ViT-L/14 with 4 registers, SigLIP So400m/14, Llama-2-7B;
../shared/docs/openvla-reference.md). Dataclasses only, no torch: :mod:`policies.openvla.config` embeds them.
"""

from __future__ import annotations

import dataclasses


def positive(owner: str, **values: int | float) -> None:
    """Raise ValueError naming ``owner.field`` for each of ``values`` that is not > 0."""
    for name, value in values.items():
        if value <= 0:
            raise ValueError(f"{owner}.{name} must be > 0, got {value!r}")


@dataclasses.dataclass(frozen=True)
class VisionSpec:
    """Dimensions of one ViT featurizer (timm naming in the OpenVLA checkpoint, transformers modules here)."""

    width: int
    """Embedding dimension D of the ViT (DINOv2 ViT-L: 1024, SigLIP So400m: 1152)."""
    depth: int
    """Number of transformer blocks stored (24 / 27). Features are read after block ``depth - 2`` (the
    second-to-last, as OpenVLA does); the last block and the final norm are kept only for checkpoint fidelity."""
    heads: int
    """Attention heads; must divide ``width``."""
    mlp_dim: int
    """Hidden size of each block's MLP (DINOv2: 4 x width, an integer ratio as transformers requires; SigLIP
    So400m: 4304)."""
    registers: int = 0
    """Register tokens (DINOv2 with registers: 4; SigLIP: 0). Dropped from the features with the class token."""

    def __post_init__(self) -> None:
        positive("VisionSpec", width=self.width, heads=self.heads, mlp_dim=self.mlp_dim)
        if self.depth < 2:
            raise ValueError(f"VisionSpec.depth must be >= 2 (features come from block depth-2), got {self.depth}")
        if self.width % self.heads:
            raise ValueError(f"VisionSpec.width {self.width} is not divisible by heads {self.heads}")
        if self.registers < 0:
            raise ValueError(f"VisionSpec.registers must be >= 0, got {self.registers}")


@dataclasses.dataclass(frozen=True)
class LLMSpec:
    """Dimensions of the Llama language model (transformers ``LlamaForCausalLM``)."""

    hidden_size: int = 4096
    """Model width D (Llama-2-7B: 4096)."""
    num_layers: int = 32
    """Decoder layers."""
    num_heads: int = 32
    """Attention heads; must divide ``hidden_size``."""
    num_kv_heads: int = 32
    """Key/value heads (grouped-query attention when < num_heads); must divide ``num_heads``."""
    intermediate_size: int = 11008
    """SwiGLU MLP hidden size."""
    vocab_size: int = 32064
    """Rows of the embedding and of the (untied) lm_head: the tokenizer size padded to a multiple of 64."""
    max_position_embeddings: int = 2048
    """Longest sequence (RoPE positions)."""
    rms_norm_eps: float = 1e-6
    """RMSNorm epsilon."""
    rope_theta: float = 10000.0
    """RoPE base frequency."""
    pad_token_id: int = 32000
    """Padding id (OpenVLA: 32000, ``<PAD>``)."""
    bos_token_id: int = 1
    """Beginning-of-sequence id; the processor's prompts start with it and patches are inserted after it."""
    eos_token_id: int = 2
    """End-of-sequence id, used as OFT's STOP token after the action slots."""

    def __post_init__(self) -> None:
        positive(
            "LLMSpec",
            hidden_size=self.hidden_size,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            num_kv_heads=self.num_kv_heads,
            intermediate_size=self.intermediate_size,
            vocab_size=self.vocab_size,
            max_position_embeddings=self.max_position_embeddings,
            rms_norm_eps=self.rms_norm_eps,
            rope_theta=self.rope_theta,
        )
        if self.hidden_size % self.num_heads:
            raise ValueError(f"LLMSpec.hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"LLMSpec.num_heads {self.num_heads} is not divisible by num_kv_heads {self.num_kv_heads}")
        for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
            value = getattr(self, name)
            if not 0 <= value < self.vocab_size:
                raise ValueError(f"LLMSpec.{name} must be in [0, vocab_size={self.vocab_size}), got {value}")


DINOV2_VIT_L = VisionSpec(width=1024, depth=24, heads=16, mlp_dim=4096, registers=4)
SIGLIP_SO400M = VisionSpec(width=1152, depth=27, heads=16, mlp_dim=4304, registers=0)
LLAMA2_7B = LLMSpec()


TINY_VIT = VisionSpec(width=192, depth=4, heads=3, mlp_dim=768, registers=4)
TINY_SIGLIP = VisionSpec(width=192, depth=4, heads=3, mlp_dim=768, registers=0)
TINY_LLM = LLMSpec(
    hidden_size=256,
    num_layers=4,
    num_heads=4,
    num_kv_heads=4,
    intermediate_size=512,
    vocab_size=1024,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)
