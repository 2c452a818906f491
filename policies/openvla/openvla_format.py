"""OpenVLA-format I/O: read (:func:`from_openvla_checkpoint`) and write (:func:`export_openvla_checkpoint`)
OpenVLA / OpenVLA-OFT checkpoint directories, and their config.json <-> VLAConfig, shard inventory, head files.

Directory: config.json, model-*.safetensors + index (or a single model.safetensors), dataset_statistics.json,
preprocessor_config.json, tokenizer files, OFT heads ``action_head--{step}_checkpoint.pt`` /
``proprio_projector--{step}_checkpoint.pt``. Loaded by key remap (:mod:`policies.openvla.keymap`), no
``trust_remote_code``, no timm; head files with ``weights_only=True``; every reader checks the key set exactly
(``policies.openvla.weights.key_report``). The exporter is atomic (``common.files.atomic_directory``).

Facts (openvla ``prismatic/extern/hf/configuration_prismatic.py``, openvla-reference.md, fixtures README):
``text_config`` is a diff against transformers 4.40 ``LlamaConfig()`` defaults; vision dims come from the known
timm ids or, for test fixtures, from a ``vision_specs`` list; the vocabulary is padded by ``pad_to_multiple_of``
and the action bins end at ``vocab_size - pad_to_multiple_of``. OFT saves its heads beside the weights as
``action_head--{step}_checkpoint.pt`` / ``proprio_projector--{step}_checkpoint.pt`` (DDP ``module.`` prefix).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from common.files import atomic_directory
from policies.normalization import NormStats, load_dataset_statistics, save_dataset_statistics
from policies.openvla.config import LLMSpec, VisionSpec, VLAConfig
from policies.openvla.keymap import convert, invert, openvla_rules, openvla_shapes
from policies.openvla.model import HEAD_MODULES, VLA
from policies.openvla.processor import VLAProcessor, load_tokenizer
from policies.openvla.weights import CheckpointError, build_model, key_report, shapes, strip_module

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


def shard_inventory(ckpt_dir: Path) -> dict[str, str]:
    """Tensor name -> shard file name from ``model.safetensors.index.json`` (or the single ``model.safetensors``).

    Raises:
        FileNotFoundError: no weights at all, or shards named by the index are missing (lists them with the
            tensors they should hold).
    """
    from safetensors import safe_open

    index = ckpt_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ValueError(f"{index}: no `weight_map`")
    elif (ckpt_dir / "model.safetensors").is_file():
        with safe_open(ckpt_dir / "model.safetensors", framework="pt") as f:
            weight_map = {k: "model.safetensors" for k in f.keys()}
    else:
        raise FileNotFoundError(f"{ckpt_dir}: neither model.safetensors.index.json nor model.safetensors")
    missing: dict[str, list[str]] = {}
    for key, shard in weight_map.items():
        if not (ckpt_dir / shard).is_file():
            missing.setdefault(shard, []).append(key)
    if missing:
        detail = "; ".join(
            f"{s} (holds {len(k)} tensors: {sorted(k)[:20]}{' ...' if len(k) > 20 else ''})"
            for s, k in sorted(missing.items())
        )
        raise FileNotFoundError(f"{ckpt_dir}: missing weight shard(s): {detail}")
    return weight_map


def find_head_file(ckpt_dir: Path, component: str, step: str | None) -> Path | None:
    """OFT head file ``{component}--{step}_checkpoint.pt`` (any step when ``step`` is None; must be unique)."""
    pattern = re.compile(rf"^{re.escape(component)}--(.+)_checkpoint\.pt$")
    found = sorted(p for p in ckpt_dir.iterdir() if pattern.match(p.name))
    if step is not None:
        found = [p for p in found if pattern.match(p.name).group(1) == str(step)]
    if len(found) > 1:
        raise ValueError(f"{ckpt_dir}: several {component} files {[p.name for p in found]}; pass step=")
    return found[0] if found else None


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


OFT_HEADS = {"action_head": "action_head", "proprio_projector": "proprio_projector"}


def from_openvla_checkpoint(
    ckpt_dir: str | os.PathLike,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    step: str | None = None,
    **overrides: Any,
) -> tuple[VLA, VLAProcessor, dict[str, NormStats]]:
    """Load an OpenVLA(-OFT) checkpoint directory without remote code.

    Args:
        ckpt_dir: directory with config.json, weights (+ index), dataset_statistics.json, optional tokenizer,
            preprocessor_config.json and OFT head files.
        dtype, device: where the weights end up (e.g. ``torch.bfloat16``, ``"cuda"``).
        step: which OFT head files to take when several steps are present.
        overrides: VLAConfig fields not stored in the checkpoint (``chunk_size``, default 8 with an OFT head;
            ``cameras``, default ("head",); ``center_crop``; ...).

    Returns:
        (model in eval mode, processor, {unnorm_key: NormStats}). The processor has no tokenizer when the
        directory holds none (image preprocessing still works).

    Raises:
        FileNotFoundError: config.json or a weight shard is missing (named).
        CheckpointError: missing / unexpected / mis-shaped tensors (listed), in the weights or the head files.
        ValueError: an unsupported config (named field).
    """
    ckpt_dir = Path(ckpt_dir)
    raw = read_json(ckpt_dir / "config.json")
    heads = {name: _load_head_file(ckpt_dir, name, step) for name in OFT_HEADS}
    llm_dim = int(raw.get("text_config", {}).get("hidden_size", LLAMA_440_DEFAULTS["hidden_size"]))
    fields = head_fields(heads["action_head"], heads["proprio_projector"], llm_dim, str(ckpt_dir))
    config = config_from_openvla(
        raw, str(ckpt_dir / "config.json"), fields if heads["action_head"] is not None else {}, overrides
    )
    model = build_model(config, dtype, device)
    _load_openvla_weights(model, ckpt_dir)
    for name, state in heads.items():
        module = getattr(model, name)
        if state is None or module is None:
            continue
        key_report(f"{ckpt_dir} {name} file", shapes(module.state_dict()), shapes(state))
        module.load_state_dict(state)  # bf16 OFT head tensors are cast to the model dtype
    model.to(dtype=dtype).eval()
    processor = VLAProcessor(config, load_tokenizer(ckpt_dir), image_norm=_image_norm(ckpt_dir))
    return model, processor, _norm_stats(ckpt_dir, raw)


def _load_head_file(ckpt_dir: Path, component: str, step: str | None) -> dict[str, torch.Tensor] | None:
    path = find_head_file(ckpt_dir, component, step)
    if path is None:
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state dict, got {type(state).__name__}")
    return strip_module(state)


def _load_openvla_weights(model: VLA, ckpt_dir: Path) -> None:
    from safetensors import safe_open

    weight_map = shard_inventory(ckpt_dir)
    ours = {k: v for k, v in model.state_dict().items() if k.split(".")[0] not in HEAD_MODULES}
    rules = openvla_rules(model.config, list(model.language_model.state_dict()))
    covered = {k for r in rules for k in r.ours}
    if covered != set(ours):  # a programming error in the rules, not a bad checkpoint
        raise RuntimeError(f"key rules do not cover the model: {sorted(set(ours) ^ covered)[:10]}")
    with contextlib.ExitStack() as stack:
        handles = {s: stack.enter_context(safe_open(ckpt_dir / s, framework="pt")) for s in set(weight_map.values())}
        absent = sorted(k for k, s in weight_map.items() if k not in handles[s].keys())
        if absent:
            raise CheckpointError(f"{ckpt_dir}: tensors listed in the index are absent from their shard: {absent[:20]}")
        found = {k: tuple(handles[s].get_slice(k).get_shape()) for k, s in weight_map.items()}
        key_report(str(ckpt_dir), openvla_shapes(rules, shapes(ours)), found)
        with torch.no_grad():
            for rule in rules:
                tensors = [handles[weight_map[k]].get_tensor(k) for k in rule.ov]
                for key, value in zip(rule.ours, convert(rule, tensors)):
                    ours[key].copy_(value)


def _image_norm(ckpt_dir: Path) -> list[dict] | None:
    path = ckpt_dir / "preprocessor_config.json"
    if not path.is_file():
        return None
    raw = read_json(path)
    if "tvf_normalize_params" in raw:  # what transformers' ImageProcessingMixin ends up using (fixtures README)
        return [{"mean": p["mean"], "std": p["std"]} for p in raw["tvf_normalize_params"]]
    if "means" in raw and "stds" in raw:
        return [{"mean": m, "std": s} for m, s in zip(raw["means"], raw["stds"])]
    return None


def _norm_stats(ckpt_dir: Path, raw: dict) -> dict[str, NormStats]:
    path = ckpt_dir / "dataset_statistics.json"
    if path.is_file():
        return load_dataset_statistics(path)
    return {
        k: NormStats.from_json(v, f"{ckpt_dir}/config.json norm_stats[{k!r}]")
        for k, v in (raw.get("norm_stats") or {}).items()
    }


def export_openvla_checkpoint(
    out_dir: str | os.PathLike,
    model: VLA,
    norm_stats: Mapping[str, NormStats],
    *,
    max_shard_bytes: int | None = None,
    step: str = "latest",
    processor: VLAProcessor | None = None,
) -> Path:
    """Write ``model`` in the OpenVLA(-OFT) on-disk format (tests and interchange; atomic).

    Tensors are written in the model's dtype; shards hold at most ``max_shard_bytes`` (None: one shard + index).
    OFT heads go to ``action_head--{step}_checkpoint.pt`` / ``proprio_projector--{step}_checkpoint.pt`` with
    DDP's ``module.`` prefix. FiLM weights have no OpenVLA representation and are refused.
    """
    from safetensors.torch import save_file

    if model.film is not None:
        raise ValueError("export_openvla_checkpoint: FiLM weights have no OpenVLA-format file; disable use_film")
    state = model.state_dict()
    rules = openvla_rules(model.config, list(model.language_model.state_dict()))
    tensors: dict[str, torch.Tensor] = {}
    for rule in rules:
        for key, value in zip(rule.ov, invert(rule, [state[k] for k in rule.ours])):
            tensors[key] = value.detach().contiguous().cpu()
    stats_json = {k: v.to_json() for k, v in norm_stats.items()}
    with atomic_directory(out_dir) as tmp:
        shards = _split(tensors, max_shard_bytes)
        weight_map = {}
        for i, shard in enumerate(shards):
            name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, str(tmp / name), metadata={"format": "pt"})
            weight_map.update({k: name for k in shard})
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
        cfg = config_to_openvla(model.config, stats_json)
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True))
        save_dataset_statistics(tmp / "dataset_statistics.json", norm_stats)
        for name in OFT_HEADS:
            module = getattr(model, name)
            if module is not None:
                head = {f"module.{k}": v.detach().cpu() for k, v in module.state_dict().items()}
                torch.save(head, tmp / f"{name}--{step}_checkpoint.pt")
        if processor is not None and processor.tokenizer is not None:
            processor.tokenizer.save_pretrained(tmp)
    return Path(out_dir)


def _split(tensors: Mapping[str, torch.Tensor], max_bytes: int | None) -> list[dict[str, torch.Tensor]]:
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, t in tensors.items():
        n = t.numel() * t.element_size()
        if max_bytes is not None and shards[-1] and size + n > max_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = t
        size += n
    return shards
