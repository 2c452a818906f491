"""One-to-one map between OpenVLA checkpoint tensors (timm vision names) and this package's VLA parameters.

Every rule names OpenVLA key(s), our key(s) and a transform (facts: openvla-reference.md):

* ``same``: identical tensor.
* ``split3``: timm's fused ``attn.qkv`` [3D, ...] -> transformers q/k/v projections [D, ...] each.
* ``cat``: SigLIP ``attn_pool.q`` [D, ...] + ``attn_pool.kv`` [2D, ...] -> ``nn.MultiheadAttention.in_proj`` [3D, ...].
* ``pos_cls``: DINOv2 ``pos_embed`` [1, N, D] (no class slot, timm ``no_embed_class``) -> [1, 1 + N, D] with a
  zero class row.
* ``pos_flat``: SigLIP ``pos_embed`` [1, N, D] -> ``nn.Embedding`` weight [N, D].
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import torch

from policies.openvla.config import VLAConfig


@dataclasses.dataclass(frozen=True)
class Rule:
    """OpenVLA keys ``ov`` <-> our keys ``ours`` through transform ``kind``."""

    ov: tuple[str, ...]
    ours: tuple[str, ...]
    kind: str = "same"


def _same(ov: str, ours: str) -> Rule:
    return Rule((ov,), (ours,))


def _dino_rules(ov: str, us: str, depth: int) -> list[Rule]:
    rules = [
        _same(f"{ov}cls_token", f"{us}embeddings.cls_token"),
        _same(f"{ov}reg_token", f"{us}embeddings.register_tokens"),
        Rule((f"{ov}pos_embed",), (f"{us}embeddings.position_embeddings",), "pos_cls"),
    ]
    rules += [
        _same(f"{ov}patch_embed.proj.{p}", f"{us}embeddings.patch_embeddings.projection.{p}")
        for p in ("weight", "bias")
    ]
    for i in range(depth):
        b, lay = f"{ov}blocks.{i}.", f"{us}encoder.layer.{i}."
        for p in ("weight", "bias"):
            rules += [
                _same(f"{b}norm1.{p}", f"{lay}norm1.{p}"),
                _same(f"{b}norm2.{p}", f"{lay}norm2.{p}"),
                Rule((f"{b}attn.qkv.{p}",), tuple(f"{lay}attention.{x}_proj.{p}" for x in "qkv"), "split3"),
                _same(f"{b}attn.proj.{p}", f"{lay}attention.o_proj.{p}"),
                _same(f"{b}mlp.fc1.{p}", f"{lay}mlp.fc1.{p}"),
                _same(f"{b}mlp.fc2.{p}", f"{lay}mlp.fc2.{p}"),
            ]
        rules += [
            _same(f"{b}ls1.scale_factor", f"{lay}layer_scale1.lambda1"),
            _same(f"{b}ls2.scale_factor", f"{lay}layer_scale2.lambda1"),
        ]
    rules += [_same(f"{ov}norm.{p}", f"{us}layernorm.{p}") for p in ("weight", "bias")]
    return rules


def _siglip_rules(ov: str, us: str, depth: int) -> list[Rule]:
    rules = [
        Rule((f"{ov}pos_embed",), (f"{us}embeddings.position_embedding.weight",), "pos_flat"),
        _same(f"{ov}attn_pool.latent", f"{us}head.probe"),
    ]
    for p in ("weight", "bias"):
        rules += [
            _same(f"{ov}patch_embed.proj.{p}", f"{us}embeddings.patch_embedding.{p}"),
            _same(f"{ov}norm.{p}", f"{us}post_layernorm.{p}"),
            Rule((f"{ov}attn_pool.q.{p}", f"{ov}attn_pool.kv.{p}"), (f"{us}head.attention.in_proj_{p}",), "cat"),
            _same(f"{ov}attn_pool.proj.{p}", f"{us}head.attention.out_proj.{p}"),
            _same(f"{ov}attn_pool.norm.{p}", f"{us}head.layernorm.{p}"),
            _same(f"{ov}attn_pool.mlp.fc1.{p}", f"{us}head.mlp.fc1.{p}"),
            _same(f"{ov}attn_pool.mlp.fc2.{p}", f"{us}head.mlp.fc2.{p}"),
        ]
        for i in range(depth):
            b, lay = f"{ov}blocks.{i}.", f"{us}encoder.layers.{i}."
            rules += [
                _same(f"{b}norm1.{p}", f"{lay}layer_norm1.{p}"),
                _same(f"{b}norm2.{p}", f"{lay}layer_norm2.{p}"),
                Rule((f"{b}attn.qkv.{p}",), tuple(f"{lay}self_attn.{x}_proj.{p}" for x in "qkv"), "split3"),
                _same(f"{b}attn.proj.{p}", f"{lay}self_attn.out_proj.{p}"),
                _same(f"{b}mlp.fc1.{p}", f"{lay}mlp.fc1.{p}"),
                _same(f"{b}mlp.fc2.{p}", f"{lay}mlp.fc2.{p}"),
            ]
    return rules


def openvla_rules(config: VLAConfig, llm_keys: Sequence[str]) -> list[Rule]:
    """Rules covering every non-head tensor of a VLA built from ``config``.

    ``llm_keys``: the keys of ``language_model.state_dict()`` (named identically in OpenVLA checkpoints).
    """
    rules: list[Rule] = []
    for name, kind, spec in config.featurizers:
        ov = us = f"vision_backbone.{name}."
        rules += (_dino_rules if kind == "dinov2" else _siglip_rules)(ov, us, spec.depth)
    fcs = ("fc1", "fc2", "fc3") if config.projector_kind == "fused-gelu-mlp" else ("fc1", "fc2")
    rules += [_same(f"projector.{fc}.{p}", f"projector.{fc}.{p}") for fc in fcs for p in ("weight", "bias")]
    rules += [_same(f"language_model.{k}", f"language_model.{k}") for k in llm_keys]
    return rules


def openvla_shapes(rules: Sequence[Rule], our_shapes: Mapping[str, Sequence[int]]) -> dict[str, tuple[int, ...]]:
    """The OpenVLA tensor shapes implied by our parameter shapes (used to check a meta-device build)."""
    out: dict[str, tuple[int, ...]] = {}
    for rule in rules:
        shapes = [tuple(our_shapes[k]) for k in rule.ours]
        if rule.kind == "same":
            out[rule.ov[0]] = shapes[0]
        elif rule.kind == "split3":
            out[rule.ov[0]] = (3 * shapes[0][0], *shapes[0][1:])
        elif rule.kind == "cat":
            d = shapes[0][0] // 3
            out[rule.ov[0]], out[rule.ov[1]] = (d, *shapes[0][1:]), (2 * d, *shapes[0][1:])
        elif rule.kind == "pos_cls":
            out[rule.ov[0]] = (shapes[0][0], shapes[0][1] - 1, shapes[0][2])
        elif rule.kind == "pos_flat":
            out[rule.ov[0]] = (1, *shapes[0])
        else:
            raise ValueError(f"unknown rule kind {rule.kind!r}")
    return out


def convert(rule: Rule, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """OpenVLA tensors of ``rule.ov`` -> our tensors of ``rule.ours`` (same order)."""
    if rule.kind == "same":
        return [tensors[0]]
    if rule.kind == "split3":
        return list(tensors[0].chunk(3, dim=0))
    if rule.kind == "cat":
        return [torch.cat(list(tensors), dim=0)]
    if rule.kind == "pos_cls":
        t = tensors[0]
        return [torch.cat([torch.zeros_like(t[:, :1]), t], dim=1)]
    if rule.kind == "pos_flat":
        return [tensors[0].reshape(tensors[0].shape[1:])]
    raise ValueError(f"unknown rule kind {rule.kind!r}")


def invert(rule: Rule, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Our tensors of ``rule.ours`` -> OpenVLA tensors of ``rule.ov`` (inverse of :func:`convert`).

    ``pos_cls`` drops the class position row (zero in OpenVLA-derived weights; timm has no such slot).
    """
    if rule.kind == "same":
        return [tensors[0]]
    if rule.kind == "split3":
        return [torch.cat(list(tensors), dim=0)]
    if rule.kind == "cat":
        d = tensors[0].shape[0] // 3
        return [tensors[0][:d], tensors[0][d:]]
    if rule.kind == "pos_cls":
        return [tensors[0][:, 1:]]
    if rule.kind == "pos_flat":
        return [tensors[0].unsqueeze(0)]
    raise ValueError(f"unknown rule kind {rule.kind!r}")
