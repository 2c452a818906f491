"""OpenVLA ``config.json`` <-> :class:`~policies.openvla.config.VLAConfig`, and the config fields implied by OFT
head files (:mod:`policies.openvla.openvla_format` reads and writes the directories).

Facts (openvla ``prismatic/extern/hf/configuration_prismatic.py``, openvla-reference.md, fixtures README):
``text_config`` is a diff against transformers 4.40 ``LlamaConfig()`` defaults; vision dims come from the known
timm ids or, for test fixtures, from a ``vision_specs`` list; the vocabulary is padded by ``pad_to_multiple_of``
and the action bins end at ``vocab_size - pad_to_multiple_of``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from policies.openvla.config import LLMSpec, VisionSpec, VLAConfig

LLAMA_440_DEFAULTS: dict[str, Any] = {
    "vocab_size": 32000,
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": None,
    "hidden_act": "silu",
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-6,
    "pad_token_id": None,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "tie_word_embeddings": False,
    "rope_theta": 10000.0,
    "rope_scaling": None,
    "attention_bias": False,
    "mlp_bias": False,
}
"""transformers 4.40.1 ``LlamaConfig()`` defaults that an OpenVLA ``text_config`` diff is applied to."""

KNOWN_TIMM: dict[str, tuple[str, int, int, VisionSpec]] = {
    "vit_large_patch14_reg4_dinov2.lvd142m": ("dinov2", 224, 14, VisionSpec(1024, 24, 16, 4096, 4)),
    "vit_so400m_patch14_siglip_224": ("siglip", 224, 14, VisionSpec(1152, 27, 16, 4304, 0)),
}
"""timm id -> (kind, image size, patch, dims) for the featurizers of the released OpenVLA checkpoints."""

_SPEC_KINDS = {"dinov2_reg": "dinov2", "siglip": "siglip"}
LLAMA2_EMPTY_TOKEN = 29871


def read_json(path: Path) -> Any:
    """Parse a JSON file; errors name the file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err


def _vision_from_config(raw: dict, where: str) -> tuple[list[tuple[str, int, int, VisionSpec]], bool]:
    fused = bool(raw.get("use_fused_vision_backbone", False))
    ids = list(raw.get("timm_model_ids", []))
    if "vision_specs" in raw:
        specs = []
        for i, s in enumerate(raw["vision_specs"]):
            if s.get("kind") not in _SPEC_KINDS:
                raise ValueError(f"{where}: vision_specs[{i}].kind {s.get('kind')!r} not in {list(_SPEC_KINDS)}")
            dims = VisionSpec(
                width=int(s["embed_dim"]),
                depth=int(s["depth"]),
                heads=int(s["num_heads"]),
                mlp_dim=int(s["embed_dim"] * s["mlp_ratio"]),
                registers=int(s.get("reg_tokens", 0)),
            )
            specs.append((_SPEC_KINDS[s["kind"]], int(s["img_size"]), int(s["patch_size"]), dims))
    else:
        unknown = [t for t in ids if t not in KNOWN_TIMM]
        if unknown:
            raise ValueError(
                f"{where}: unknown timm_model_ids {unknown}; known: {sorted(KNOWN_TIMM)} "
                "(or give explicit `vision_specs`)"
            )
        specs = [KNOWN_TIMM[t] for t in ids]
    if len(specs) != (2 if fused else 1):
        raise ValueError(
            f"{where}: use_fused_vision_backbone={fused} needs {2 if fused else 1} featurizer(s), got {len(specs)}"
        )
    if fused and [s[0] for s in specs] != ["dinov2", "siglip"]:
        raise ValueError(f"{where}: a fused backbone must be [dinov2, siglip], got {[s[0] for s in specs]}")
    if len({(s[1], s[2]) for s in specs}) != 1:
        raise ValueError(f"{where}: featurizers disagree on image size / patch: {[(s[1], s[2]) for s in specs]}")
    return specs, fused


def _llm_from_config(raw: dict, where: str) -> LLMSpec:
    text = {**LLAMA_440_DEFAULTS, **{k: v for k, v in raw.get("text_config", {}).items() if k != "torch_dtype"}}
    for key, want in (
        ("hidden_act", "silu"),
        ("tie_word_embeddings", False),
        ("rope_scaling", None),
        ("attention_bias", False),
        ("mlp_bias", False),
    ):
        if text.get(key) != want:
            raise ValueError(f"{where}: text_config.{key}={text.get(key)!r} is not supported (need {want!r})")
    pad = raw.get("pad_token_id", text.get("pad_token_id"))
    return LLMSpec(
        hidden_size=text["hidden_size"],
        num_layers=text["num_hidden_layers"],
        num_heads=text["num_attention_heads"],
        num_kv_heads=text["num_key_value_heads"] or text["num_attention_heads"],
        intermediate_size=text["intermediate_size"],
        vocab_size=text["vocab_size"],
        max_position_embeddings=text["max_position_embeddings"],
        rms_norm_eps=float(text["rms_norm_eps"]),
        rope_theta=float(text["rope_theta"]),
        pad_token_id=int(pad if pad is not None else 0),
        bos_token_id=int(text["bos_token_id"]),
        eos_token_id=int(text["eos_token_id"]),
    )


def config_from_openvla(raw: dict, where: str, heads: dict[str, Any], overrides: dict[str, Any]) -> VLAConfig:
    """VLAConfig for an OpenVLA ``config.json`` dict plus what the OFT head files imply, then ``overrides``.

    ``heads``: fields derived from the head files (:func:`head_fields`); empty = original OpenVLA (tokens head,
    one action per chunk, action_dim from the norm stats).
    """
    if raw.get("model_type") != "openvla":
        raise ValueError(f"{where}: model_type {raw.get('model_type')!r} is not 'openvla'")
    specs, fused = _vision_from_config(raw, where)
    llm = _llm_from_config(raw, where)
    kind, image_size, patch, _ = specs[0]
    fields: dict[str, Any] = {
        "vision_backbone": "dinosiglip" if fused else kind,
        "image_size": image_size,
        "patch_size": patch,
        "llm": llm,
        "n_action_bins": int(raw.get("n_action_bins", 256)),
        "action_token_end_id": llm.vocab_size - int(raw.get("pad_to_multiple_of", 0)),
        "empty_token_id": LLAMA2_EMPTY_TOKEN if str(raw.get("llm_backbone_id", "")).startswith("llama2") else None,
        "projector": "auto",
        "cameras": ("head",),  # auto = fused-gelu-mlp iff fused, as prismatic
    }
    for k, _, _, spec in specs:
        fields["dino" if k == "dinov2" else "siglip"] = spec
    if heads:
        fields.update(heads)
    else:
        stats = raw.get("norm_stats") or {}
        first = next(iter(stats.values()), {})
        fields.update(
            action_head="tokens",
            token_decoding="autoregressive",
            proprio_dim=0,
            action_dim=len(first.get("action", {}).get("q01", [0] * 7)),
        )
        # the original OpenVLA predicts one action; a new L1 head (fine-tuning OFT-style) gets OFT's chunk of 8
        fields["chunk_size"] = 1 if overrides.get("action_head", "tokens") == "tokens" else 8
    config = VLAConfig().replace(**fields)
    return config.replace(**overrides) if overrides else config


def config_to_openvla(config: VLAConfig, norm_stats_json: dict | None = None) -> dict[str, Any]:
    """An OpenVLA-format ``config.json`` dict for ``config`` (with ``vision_specs``, text_config as a diff)."""
    fused = config.vision_backbone == "dinosiglip"
    if (config.projector_kind == "fused-gelu-mlp") != fused:
        raise ValueError(
            f"OpenVLA format ties the projector to the backbone (fused-gelu-mlp iff dinosiglip); got "
            f"projector {config.projector_kind!r} with {config.vision_backbone!r}"
        )
    specs = []
    for _, kind, spec in config.featurizers:
        specs.append(
            {
                "kind": "dinov2_reg" if kind == "dinov2" else "siglip",
                "img_size": config.image_size,
                "patch_size": config.patch_size,
                "embed_dim": spec.width,
                "depth": spec.depth,
                "num_heads": spec.heads,
                "mlp_ratio": spec.mlp_dim / spec.width,
                "reg_tokens": spec.registers,
            }
        )
    llm = config.llm
    pad_multiple = llm.vocab_size - config.action_token_end_id
    text = {
        "model_type": "llama",
        "hidden_size": llm.hidden_size,
        "intermediate_size": llm.intermediate_size,
        "num_hidden_layers": llm.num_layers,
        "num_attention_heads": llm.num_heads,
        "num_key_value_heads": llm.num_kv_heads,
        "vocab_size": llm.vocab_size,
        "pad_token_id": llm.pad_token_id,
        "max_position_embeddings": llm.max_position_embeddings,
        "rms_norm_eps": llm.rms_norm_eps,
        "rope_theta": llm.rope_theta,
        "bos_token_id": llm.bos_token_id,
        "eos_token_id": llm.eos_token_id,
    }
    text = {k: v for k, v in text.items() if k == "model_type" or LLAMA_440_DEFAULTS.get(k, object()) != v}
    return {
        "model_type": "openvla",
        "arch_specifier": f"no-align+{config.projector_kind}",
        "use_fused_vision_backbone": fused,
        "timm_model_ids": [f"vla_harness_{kind}" for _, kind, _ in config.featurizers],
        "vision_specs": specs,
        "image_sizes": [config.image_size] * len(specs),
        "llm_backbone_id": "llama2-custom" if config.empty_token_id == LLAMA2_EMPTY_TOKEN else "custom",
        "n_action_bins": config.n_action_bins,
        "pad_to_multiple_of": pad_multiple,
        "pad_token_id": llm.pad_token_id,
        "text_config": text,
        "norm_stats": norm_stats_json or {},
    }


def head_fields(action_head: dict | None, proprio: dict | None, llm_dim: int, where: str) -> dict[str, Any]:
    """Config fields implied by OFT head state dicts (``module.`` already stripped)."""
    fields: dict[str, Any] = {"proprio_dim": 0}
    if action_head is not None:
        try:
            fc1, fc2 = action_head["model.fc1.weight"], action_head["model.fc2.weight"]
        except KeyError as err:
            raise ValueError(f"{where}: action head lacks {err} (keys: {sorted(action_head)[:8]}...)") from err
        a = int(fc2.shape[0])
        if fc1.shape[1] != llm_dim * a:
            raise ValueError(f"{where}: action head fc1 input {fc1.shape[1]} != llm hidden {llm_dim} x action_dim {a}")
        blocks = {k.split(".")[2] for k in action_head if k.startswith("model.mlp_resnet_blocks.")}
        fields.update(
            action_head="l1",
            action_dim=a,
            action_head_blocks=len(blocks),
            action_head_hidden=None if fc1.shape[0] == llm_dim else int(fc1.shape[0]),
            chunk_size=8,
        )
    if proprio is not None:
        if "fc1.weight" not in proprio:
            raise ValueError(f"{where}: proprio projector lacks fc1.weight (keys: {sorted(proprio)})")
        fields["proprio_dim"] = int(proprio["fc1.weight"].shape[1])
    return fields
