"""Checkpoint I/O: OpenVLA-format directories (read, and write for tests/export) and our native format.

OpenVLA format (openvla/openvla-7b + OpenVLA-OFT): config.json, model-*.safetensors + index (or a single
model.safetensors), dataset_statistics.json, preprocessor_config.json, tokenizer files, OFT heads
``action_head--{step}_checkpoint.pt`` / ``proprio_projector--{step}_checkpoint.pt``. Loaded by key remap
(:mod:`policies.openvla.keymap`), no ``trust_remote_code``, no timm; head files with ``weights_only=True``.

Native format (:func:`save_vla` / :func:`load_vla`): ``config.json`` ({"format": "vla-harness/openvla",
"format_version": 1, "config": VLAConfig.to_dict()}), ``model.safetensors`` (the full VLA state dict),
``vla_processor.json`` + tokenizer files, optional ``dataset_statistics.json``.

Both writers are atomic: everything goes to a temporary sibling directory renamed into place at the end.
Every reader checks the key set exactly and raises :class:`CheckpointError` listing missing, unexpected and
mis-shaped tensors.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from policies.normalization import NormStats, load_dataset_statistics, save_dataset_statistics
from policies.openvla import openvla_format as ovf
from policies.openvla.config import VLAConfig
from policies.openvla.keymap import convert, invert, openvla_rules, openvla_shapes
from policies.openvla.model import HEAD_MODULES, VLA
from policies.openvla.processor import VLAProcessor, load_tokenizer

NATIVE_FORMAT = "vla-harness/openvla"
NATIVE_VERSION = 1
OFT_HEADS = {"action_head": "action_head", "proprio_projector": "proprio_projector"}


class CheckpointError(ValueError):
    """A checkpoint's tensors do not match the model: the message lists every offending key."""


def key_report(where: str, expected: Mapping[str, tuple], found: Mapping[str, tuple], limit: int = 20) -> None:
    """Raise :class:`CheckpointError` unless ``found`` has exactly the keys and shapes of ``expected``."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    mismatched = sorted(k for k in set(expected) & set(found) if tuple(expected[k]) != tuple(found[k]))
    if not (missing or unexpected or mismatched):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s): {missing[:limit]}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {unexpected[:limit]}")
    if mismatched:
        detail = [f"{k}: expected {list(expected[k])}, found {list(found[k])}" for k in mismatched[:limit]]
        parts.append(f"{len(mismatched)} shape mismatch(es): {detail}")
    raise CheckpointError(f"{where}: " + "; ".join(parts))


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling directory that replaces ``target`` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def build_model(config: VLAConfig, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> VLA:
    """An uninitialised VLA created directly on ``device`` in ``dtype`` (no fp32 copy of a 7B model); a
    checkpoint fills its weights."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = VLA(config, skip_init=True)
    finally:
        torch.set_default_dtype(previous)
    return model.to(dtype=dtype)


def _shapes(state: Mapping[str, torch.Tensor]) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in state.items()}


def _strip_module(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


# ---- OpenVLA format -----------------------------------------------------------------------------------------
def from_openvla_checkpoint(ckpt_dir: str | os.PathLike, *, dtype: torch.dtype = torch.float32,
                            device: str | torch.device = "cpu", step: str | None = None,
                            **overrides: Any) -> tuple[VLA, VLAProcessor, dict[str, NormStats]]:
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
    raw = ovf.read_json(ckpt_dir / "config.json")
    heads = {name: _load_head_file(ckpt_dir, name, step) for name in OFT_HEADS}
    llm_dim = int(raw.get("text_config", {}).get("hidden_size", ovf.LLAMA_440_DEFAULTS["hidden_size"]))
    fields = ovf.head_fields(heads["action_head"], heads["proprio_projector"], llm_dim, str(ckpt_dir))
    config = ovf.config_from_openvla(raw, str(ckpt_dir / "config.json"),
                                     fields if heads["action_head"] is not None else {}, overrides)
    model = build_model(config, dtype, device)
    _load_openvla_weights(model, ckpt_dir)
    for name, state in heads.items():
        module = getattr(model, name)
        if state is None or module is None:
            continue
        key_report(f"{ckpt_dir} {name} file", _shapes(module.state_dict()), _shapes(state))
        module.load_state_dict(state)  # bf16 OFT head tensors are cast to the model dtype
    model.to(dtype=dtype).eval()
    processor = VLAProcessor(config, load_tokenizer(ckpt_dir), image_norm=_image_norm(ckpt_dir))
    return model, processor, _norm_stats(ckpt_dir, raw)


def _load_head_file(ckpt_dir: Path, component: str, step: str | None) -> dict[str, torch.Tensor] | None:
    path = ovf.find_head_file(ckpt_dir, component, step)
    if path is None:
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state dict, got {type(state).__name__}")
    return _strip_module(state)


def _load_openvla_weights(model: VLA, ckpt_dir: Path) -> None:
    from safetensors import safe_open

    weight_map = ovf.shard_inventory(ckpt_dir)
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
        key_report(str(ckpt_dir), openvla_shapes(rules, _shapes(ours)), found)
        with torch.no_grad():
            for rule in rules:
                tensors = [handles[weight_map[k]].get_tensor(k) for k in rule.ov]
                for key, value in zip(rule.ours, convert(rule, tensors)):
                    ours[key].copy_(value)


def _image_norm(ckpt_dir: Path) -> list[dict] | None:
    path = ckpt_dir / "preprocessor_config.json"
    if not path.is_file():
        return None
    raw = ovf.read_json(path)
    if "tvf_normalize_params" in raw:  # what transformers' ImageProcessingMixin ends up using (fixtures README)
        return [{"mean": p["mean"], "std": p["std"]} for p in raw["tvf_normalize_params"]]
    if "means" in raw and "stds" in raw:
        return [{"mean": m, "std": s} for m, s in zip(raw["means"], raw["stds"])]
    return None


def _norm_stats(ckpt_dir: Path, raw: dict) -> dict[str, NormStats]:
    path = ckpt_dir / "dataset_statistics.json"
    if path.is_file():
        return load_dataset_statistics(path)
    return {k: NormStats.from_json(v, f"{ckpt_dir}/config.json norm_stats[{k!r}]")
            for k, v in (raw.get("norm_stats") or {}).items()}


def export_openvla_checkpoint(out_dir: str | os.PathLike, model: VLA, norm_stats: Mapping[str, NormStats],
                              *, max_shard_bytes: int | None = None, step: str = "latest",
                              processor: VLAProcessor | None = None) -> Path:
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
        cfg = ovf.config_to_openvla(model.config, stats_json)
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


# ---- native format --------------------------------------------------------------------------------------------
def save_vla(out_dir: str | os.PathLike, model: VLA, processor: VLAProcessor,
             norm_stats: Mapping[str, NormStats] | None = None) -> Path:
    """Write the full model (config.json + model.safetensors), the processor/tokenizer and optional norm stats.

    Atomic: ``out_dir`` is replaced only when everything was written.

    Raises:
        ValueError: ``model`` carries LoRA adapters (merge them with ``merge_lora`` or save them with
            ``save_adapter``).
    """
    from safetensors.torch import save_file

    if hasattr(model, "peft_config") or any(hasattr(m, "lora_A") for m in model.modules()):
        raise ValueError("save_vla: the model has LoRA adapters; merge_lora(model) first, or use save_adapter()")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    payload = {"format": NATIVE_FORMAT, "format_version": NATIVE_VERSION, "config": model.config.to_dict()}
    with atomic_directory(out_dir) as tmp:
        (tmp / "config.json").write_text(json.dumps(payload, indent=2))
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        processor.save_pretrained(tmp)
        if norm_stats:
            save_dataset_statistics(tmp / "dataset_statistics.json", norm_stats)
    return Path(out_dir)


def read_native_config(ckpt_dir: str | os.PathLike) -> VLAConfig:
    """The VLAConfig of a native checkpoint; raises ValueError when config.json is not our format."""
    path = Path(ckpt_dir) / "config.json"
    raw = ovf.read_json(path)
    if not isinstance(raw, dict) or raw.get("format") != NATIVE_FORMAT:
        hint = " (an OpenVLA checkpoint? use from_openvla_checkpoint)" if raw.get("model_type") == "openvla" else ""
        raise ValueError(f"{path}: not a {NATIVE_FORMAT} config{hint}")
    if raw.get("format_version") != NATIVE_VERSION:
        raise ValueError(f"{path}: format_version {raw.get('format_version')} unsupported (need {NATIVE_VERSION})")
    return VLAConfig.from_dict(raw["config"], where=f"{path} config")


def load_vla(ckpt_dir: str | os.PathLike, dtype: torch.dtype = torch.float32,
             device: str | torch.device = "cpu") -> tuple[VLA, VLAProcessor]:
    """Load what :func:`save_vla` wrote; the model is in eval mode.

    Raises:
        FileNotFoundError: config.json / model.safetensors / vla_processor.json missing.
        CheckpointError: the weights do not match the config (missing / unexpected / mis-shaped keys listed).
    """
    from safetensors import safe_open

    ckpt_dir = Path(ckpt_dir)
    config = read_native_config(ckpt_dir)
    weights = ckpt_dir / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: not found")
    model = build_model(config, dtype, device)
    ours = model.state_dict()
    with safe_open(weights, framework="pt") as f:
        found = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        key_report(str(weights), _shapes(ours), found)
        with torch.no_grad():
            for key in found:
                ours[key].copy_(f.get_tensor(key))
    return model.eval(), VLAProcessor.from_pretrained(ckpt_dir)
