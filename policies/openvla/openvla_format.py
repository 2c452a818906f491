"""OpenVLA-format I/O: read (:func:`from_openvla_checkpoint`) and write (:func:`export_openvla_checkpoint`)
OpenVLA / OpenVLA-OFT checkpoint directories, and their shard inventory and head files.

Directory: config.json, model-*.safetensors + index (or a single model.safetensors), dataset_statistics.json,
preprocessor_config.json, tokenizer files, OFT heads ``action_head--{step}_checkpoint.pt`` /
``proprio_projector--{step}_checkpoint.pt``. Loaded by key remap (:mod:`policies.openvla.keymap`), no
``trust_remote_code``, no timm; head files with ``weights_only=True``; every reader checks the key set exactly
(``policies.openvla.weights.key_report``). The exporter is atomic (``common.files.atomic_directory``).

config.json <-> VLAConfig lives in :mod:`policies.openvla.openvla_config`. OFT saves its heads beside the weights as
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
from policies.openvla.keymap import convert, invert, openvla_rules, openvla_shapes
from policies.openvla.model import HEAD_MODULES, VLA
from policies.openvla.openvla_config import (
    LLAMA_440_DEFAULTS,
    config_from_openvla,
    config_to_openvla,
    head_fields,
    read_json,
)
from policies.openvla.processor import VLAProcessor, load_tokenizer
from policies.openvla.weights import CheckpointError, build_model, key_report, shapes, strip_module


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
    DDP's ``module.`` prefix. FiLM and keypoint weights and the flow head have no OpenVLA representation and are
    refused.
    """
    from safetensors.torch import save_file

    if model.film is not None:
        raise ValueError("export_openvla_checkpoint: FiLM weights have no OpenVLA-format file; disable use_film")
    if model.keypoint_encoder is not None:
        raise ValueError("export_openvla_checkpoint: keypoint weights have no OpenVLA-format file; set keypoints=0")
    if model.config.action_head == "flow":
        raise ValueError("export_openvla_checkpoint: the flow-matching head has no OpenVLA-format file (OFT has L1)")
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
