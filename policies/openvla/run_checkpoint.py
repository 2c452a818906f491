"""Loading the checkpoints ``vla train`` writes (``RUN/checkpoints/step_{N}/``) as an inference model.

Only the checkpoint directory is needed -- never the training data -- plus, for a LoRA run on an OpenVLA
``--base``, that base folder (recorded in config.json). The directory layout is documented in
``train/checkpointing.py``; the names below are the single source of truth for both writer and reader.

This module imports only ``policies.*`` and ``envs.layout`` (policies/ never imports train/).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from policies.normalization import NormStats, load_dataset_statistics, select_unnorm_key
from policies.openvla.checkpoint import build_model
from policies.openvla.config import VLAConfig
from policies.openvla.model import HEAD_MODULES, VLA
from policies.openvla.processor import VLAProcessor

RUN_CHECKPOINT_FORMAT = "vla-harness/run-checkpoint"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
STATS_FILE = "dataset_statistics.json"
MODEL_FILE = "model.safetensors"
ADAPTER_DIR = "adapter"
HEADS_FILE = "heads.safetensors"
BASE_FILE = "base_model.safetensors"
TRAINING_STATE_DIR = "training_state"
LAST_LINK = "last"
ADAPTABLE_FIELDS = ("chunk_size", "cameras", "proprio_dim", "norm_mode", "action_head", "token_decoding", "use_film",
                    "action_head_hidden", "action_head_blocks", "image_aug", "center_crop", "crop_scale",
                    "proprio_noise")
"""VLAConfig fields a fine-tune may change relative to its base checkpoint (they only touch the heads, the
number of views, or preprocessing); every other field must match the base weights."""


def resolve_checkpoint_dir(path: str | os.PathLike) -> Path:
    """A checkpoint directory from a step dir, ``.../checkpoints/last``, ``.../checkpoints`` or a run dir.

    Raises:
        FileNotFoundError: nothing there, or a run / checkpoints folder without a ``last`` checkpoint.
    """
    path = Path(path)
    if (path / CONFIG_FILE).is_file():
        return path.resolve()
    for candidate in (path / LAST_LINK, path / "checkpoints" / LAST_LINK):
        if (candidate / CONFIG_FILE).is_file():
            return candidate.resolve()
    what = "does not exist" if not path.exists() else "holds no config.json and no checkpoints/last"
    raise FileNotFoundError(f"{path}: {what}; expected a checkpoint directory written by `vla train` "
                            "(RUN/checkpoints/step_N, RUN/checkpoints/last or RUN)")


def read_checkpoint_config(ckpt_dir: str | os.PathLike) -> dict[str, Any]:
    """Parse and check a run checkpoint's ``config.json``.

    Raises:
        FileNotFoundError: no config.json. ValueError: invalid JSON, another format or version, or a missing key.
    """
    path = Path(ckpt_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(raw, dict) or raw.get("format") != RUN_CHECKPOINT_FORMAT:
        got = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
        raise ValueError(f"{path}: format {got!r} is not {RUN_CHECKPOINT_FORMAT!r} (not written by `vla train`)")
    if raw.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {raw.get('format_version')!r} unsupported (need {FORMAT_VERSION})")
    missing = [k for k in ("model", "data", "finetune", "unnorm_key", "norm_mode") if k not in raw]
    if missing:
        raise ValueError(f"{path}: missing key(s) {missing}")
    if raw["finetune"] not in ("lora", "full"):
        raise ValueError(f"{path}: finetune must be 'lora' or 'full', got {raw['finetune']!r}")
    return raw


def load_state_strict(module: torch.nn.Module, path: Path, keys: Mapping[str, torch.Tensor] | None = None) -> None:
    """Copy every tensor of the safetensors file ``path`` into ``keys`` (default ``module.state_dict()``).

    Raises:
        FileNotFoundError: no file. CheckpointError: missing / unexpected / mis-shaped keys (listed).
    """
    from safetensors import safe_open

    from policies.openvla.checkpoint import key_report

    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found")
    ours = dict(module.state_dict() if keys is None else keys)
    with safe_open(path, framework="pt") as f:
        found = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        key_report(str(path), {k: tuple(v.shape) for k, v in ours.items()}, found)
        with torch.no_grad():
            for key in found:
                ours[key].copy_(f.get_tensor(key))


def backbone_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The frozen base weights of a (possibly LoRA-wrapped) VLA under plain VLA key names, heads excluded.

    peft renames a wrapped ``x.weight`` to ``x.base_layer.weight`` and adds ``lora_*`` tensors; both are undone.
    """
    vla = model.get_base_model() if hasattr(model, "get_base_model") else model
    out = {}
    for key, value in vla.state_dict().items():
        if key.split(".")[0] in HEAD_MODULES or ".lora_" in key:
            continue
        out[key.replace(".base_layer.", ".")] = value
    return out


def _new_heads(model: VLA, config: VLAConfig) -> dict[str, torch.nn.Module | None]:
    from policies.openvla.heads import FiLM, L1RegressionActionHead, ProprioProjector

    d = config.llm.hidden_size
    film = None
    if config.use_film:
        film = FiLM(d, {name: (spec.width, model.vision_backbone.featurizer_blocks(name))
                        for name, _, spec in config.featurizers})
    return {
        "proprio_projector": ProprioProjector(config.proprio_dim, d) if config.proprio_dim > 0 else None,
        "action_head": (L1RegressionActionHead(d, config.head_hidden, config.action_dim, config.chunk_size,
                                               config.action_head_blocks) if config.action_head == "l1" else None),
        "film": film,
    }


def adapt_base_model(model: VLA, config: VLAConfig, seed: int = 0) -> tuple[VLA, list[str]]:
    """Give a base VLA (e.g. from ``from_openvla_checkpoint``) the fine-tune's config, in place.

    Only :data:`ADAPTABLE_FIELDS` may differ. Heads (action head, proprio projector, FiLM) are rebuilt for the new
    config; one whose parameter shapes still fit keeps its weights (OFT's L1 head is applied per chunk step, so its
    weights do not depend on chunk_size), others are initialised under ``torch.manual_seed(seed)`` (the global
    RNG is left untouched).

    Returns:
        (the model, names of the heads that were newly initialised).

    Raises:
        ValueError: a non-adaptable field differs (listed with base vs wanted values).
    """
    old = model.config.to_dict()
    new = config.to_dict()
    fixed = [k for k in new if k not in ADAPTABLE_FIELDS and new[k] != old[k]]
    if fixed:
        detail = "; ".join(f"{k}: base {old[k]!r} vs wanted {new[k]!r}" for k in fixed)
        raise ValueError(f"the fine-tune config differs from the base checkpoint in fields that fix its weights: "
                         f"{detail}")
    param = next(model.language_model.parameters())
    created = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = _new_heads(model, config)
    for name, head in fresh.items():
        current = getattr(model, name)
        if head is not None:
            head = head.to(device=param.device, dtype=param.dtype)
            shapes = {k: v.shape for k, v in head.state_dict().items()}
            if current is not None and shapes == {k: v.shape for k, v in current.state_dict().items()}:
                head.load_state_dict(current.state_dict())  # same weights; chunk_size etc. from the new config
            else:
                created.append(name)
        setattr(model, name, head)
    model.config = config
    return model, created


def load_base_model(base_dir: str | os.PathLike, config: VLAConfig | None = None, dtype: torch.dtype = torch.float32,
                    device: str | torch.device = "cpu", overrides: Mapping[str, Any] | None = None,
                    seed: int = 0) -> tuple[VLA, VLAProcessor, dict[str, NormStats]]:
    """An OpenVLA-format base adapted to ``config`` (see :func:`adapt_base_model`) and a processor for it.

    Args:
        config: the target config; None = the base's own config with ``overrides`` (VLAConfig.replace) applied.
        seed: seed of heads that have to be initialised anew.

    Returns:
        (model in train mode, processor with the base's tokenizer and image normalization and ``config``'s
        cameras / crop flags, the base's {unnorm_key: NormStats}).
    """
    from policies.openvla.checkpoint import from_openvla_checkpoint

    model, processor, stats = from_openvla_checkpoint(base_dir, dtype=dtype, device=device)
    if config is None:
        config = model.config.replace(**dict(overrides or {}))
    model, _ = adapt_base_model(model, config, seed=seed)
    image_norm = [dict(n) for n in processor.settings.image_norm]
    return model.train(), VLAProcessor(config, processor.tokenizer, image_norm=image_norm), stats


def load_checkpoint_model(ckpt_dir: str | os.PathLike, device: str | torch.device = "cpu",
                          dtype: torch.dtype = torch.float32, base: str | os.PathLike | None = None,
                          merge: bool = False) -> tuple[Any, VLAProcessor, NormStats, dict[str, Any]]:
    """Load a ``vla train`` checkpoint for inference, from the checkpoint directory alone.

    Args:
        ckpt_dir: ``RUN/checkpoints/step_N``, ``RUN/checkpoints/last`` or ``RUN``.
        device, dtype: where and in which dtype the weights go.
        base: for a LoRA checkpoint trained on ``--base``: that folder (default: config.json's ``base``).
        merge: fold LoRA adapters into the base weights (faster; outputs differ by float rounding, < 1e-5 fp32).

    Returns:
        (model in eval mode -- a ``VLA``, or a peft ``PeftModel`` around one for an unmerged LoRA checkpoint; both
        have ``predict_action_chunk`` returning (B, H, A) NORMALIZED actions --, the processor (tokenizer
        included), the NormStats under ``config["unnorm_key"]``, the parsed config.json dict).

    Raises:
        FileNotFoundError: a file of the layout is missing, or the LoRA base folder cannot be found.
        CheckpointError: tensors that do not match the config (listed). ValueError: a malformed config.json.
    """
    from policies.openvla.lora import load_adapter, load_heads, merge_lora

    ckpt = resolve_checkpoint_dir(ckpt_dir)
    raw = read_checkpoint_config(ckpt)
    config = VLAConfig.from_dict(raw["model"], where=f"{ckpt / CONFIG_FILE} model")
    stats_all = load_dataset_statistics(ckpt / STATS_FILE)
    stats = stats_all[select_unnorm_key(stats_all, raw["unnorm_key"])]
    processor = VLAProcessor.from_pretrained(ckpt)
    if raw["finetune"] == "full":
        model = build_model(config, dtype, device)
        load_state_strict(model, ckpt / MODEL_FILE)
        return model.eval(), processor, stats, raw
    if (ckpt / BASE_FILE).is_file():
        model = build_model(config, dtype, device)
        load_state_strict(model, ckpt / BASE_FILE, keys=backbone_state(model))
    else:
        base_dir = Path(base) if base is not None else (Path(raw["base"]) if raw.get("base") else None)
        if base_dir is None or not (base_dir / "config.json").is_file():
            raise FileNotFoundError(f"{ckpt}: LoRA checkpoint without {BASE_FILE}; its base folder {base_dir} is not "
                                    "available (pass base=PATH to the OpenVLA-format base checkpoint)")
        model, _, _ = load_base_model(base_dir, config, dtype, device)
    model = load_adapter(model, ckpt / ADAPTER_DIR)
    load_heads(model, ckpt)
    model = model.to(device=device)
    if merge:
        model = merge_lora(model)
    return model.eval(), processor, stats, raw
