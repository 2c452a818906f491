"""Our run format: the checkpoints ``vla train`` writes (``RUN/checkpoints/step_{N}/``) -- layout, writer, reader.

Layout of one checkpoint (written into a temporary sibling, fsync-ed and renamed into place, so a directory named
step_N is complete; ``RUN/checkpoints/last`` is a relative symlink to the newest one, replaced atomically):

    config.json               {"format": "vla-harness/run-checkpoint", "format_version": 1,
                               "model": VLAConfig.to_dict(), "data": DataConfig as dict + "image_size" (H, W of the
                               recorded frames) + "tasks" + "visual_quality", "train": the run's flags
                               (TrainConfig.to_dict), "action_layout", "control_mode", "action_frame", "norm_mode",
                               "unnorm_key", "finetune": "lora"|"full", "base": str|null, "step": N,
                               "trainable_params", "total_params", "created_at"}
    dataset_statistics.json   {unnorm_key: statistics} (policies.normalization format)
    vla_processor.json        processor settings (VLAProcessor.save_pretrained) ...
    tokenizer.json, tokenizer_config.json   ... and the tokenizer files it writes
    finetune=full:  model.safetensors                  every weight of the VLA, heads included
    finetune=lora:  adapter/adapter_config.json, adapter/adapter_model.safetensors   (peft; no README)
                    heads.safetensors                  action head, proprio projector, FiLM (whichever exist)
                    base_model.safetensors             only without --base: the frozen (random-init) base
                                                       weights, so the directory is self-contained; with --base,
                                                       config.json's "base" names the folder they come from
    training_state/optimizer.pt   AdamW state dict (torch.save; loads with weights_only=True)
    training_state/scheduler.pt   LambdaLR state dict (idem)
    training_state/rng.pt         {"torch_cpu": (world, n) uint8, "cuda": (world, devices, m) uint8 if CUDA}
    training_state/state.json     step, epoch, micro_batch, samples_seen, world_size, seed, num_train_samples,
                                  batches_per_epoch, lr_milestones, python_rng / numpy_rng (per process, JSON)
    manifest.json             written last: {"format": "vla-harness/manifest", "files": {relative path:
                              {"bytes": n, "sha256": hex}}} of every other file (checkpoints older than the
                              manifest have none and are read unverified)

A merged checkpoint (``vla merge-lora``) has the finetune=full files and no training_state/. Writer:
:func:`write_checkpoint_dir` (``train.checkpointing`` adds the training state, the ``last`` pointer and rotation).
Readers: :func:`load_checkpoint_model` (inference) and :func:`load_backbone` (the one place that rebuilds a
checkpoint's base weights, for inference and for resuming); :func:`verify_checkpoint` checks the manifest. The
weights' identity is :func:`checkpoint_digest` (recorded by benchmarks, compared on resume).

Only the checkpoint directory is needed -- never the training data -- plus, for a LoRA run on an OpenVLA
``--base``, that base folder (recorded in config.json). This module imports only ``policies.*``, ``common`` and
``envs.layout`` (policies/ never imports train/).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from common.files import atomic_directory, write_json_atomic
from policies.normalization import NormStats, load_dataset_statistics, save_dataset_statistics, select_unnorm_key
from policies.openvla.adapt import load_base_model
from policies.openvla.config import VLAConfig
from policies.openvla.model import HEAD_MODULES
from policies.openvla.processor import VLAProcessor
from policies.openvla.weights import CheckpointError, build_model, load_state_strict

RUN_CHECKPOINT_FORMAT = "vla-harness/run-checkpoint"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
STATS_FILE = "dataset_statistics.json"
MODEL_FILE = "model.safetensors"
ADAPTER_DIR = "adapter"
HEADS_FILE = "heads.safetensors"
BASE_FILE = "base_model.safetensors"
TRAINING_STATE_DIR = "training_state"
MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "vla-harness/manifest"
LAST_LINK = "last"
WEIGHT_SUFFIXES = (".safetensors", ".json", ".pt")
"""Files that make the weights' identity (:func:`checkpoint_digest`); training_state/ and the manifest excluded."""


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
    raise FileNotFoundError(
        f"{path}: {what}; expected a checkpoint directory written by `vla train` "
        "(RUN/checkpoints/step_N, RUN/checkpoints/last or RUN)"
    )


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


def load_backbone(
    ckpt: Path,
    raw: Mapping[str, Any],
    config: VLAConfig,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    base: str | os.PathLike | None = None,
) -> Any:
    """The plain VLA of a checkpoint with every weight that is not LoRA: all of them (finetune=full), or the base
    weights (lora: base_model.safetensors, else the OpenVLA-format ``base`` folder adapted to ``config``).

    Raises:
        FileNotFoundError: a weight file is missing, or a LoRA checkpoint's base folder cannot be found.
        CheckpointError: tensors that do not match the config, or an unreadable file (named).
    """
    model = None
    if raw["finetune"] == "full":
        model = build_model(config, dtype, device)
        load_state_strict(model, ckpt / MODEL_FILE)
    elif (ckpt / BASE_FILE).is_file():
        model = build_model(config, dtype, device)
        load_state_strict(model, ckpt / BASE_FILE, keys=backbone_state(model))
    else:
        base_dir = Path(base) if base is not None else (Path(raw["base"]) if raw.get("base") else None)
        if base_dir is None or not (base_dir / "config.json").is_file():
            raise FileNotFoundError(
                f"{ckpt}: LoRA checkpoint without {BASE_FILE}; its base folder {base_dir} is not "
                "available (pass base=PATH to the OpenVLA-format base checkpoint)"
            )
        model, _, _ = load_base_model(base_dir, config, dtype, device)
    return model


def load_checkpoint_model(
    ckpt_dir: str | os.PathLike,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    base: str | os.PathLike | None = None,
    merge: bool = False,
) -> tuple[Any, VLAProcessor, NormStats, dict[str, Any]]:
    """Load a ``vla train`` checkpoint for inference, from the checkpoint directory alone (sizes checked against
    its manifest first, :func:`verify_checkpoint`).

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
        CheckpointError: a file that is cut short or unreadable, or tensors that do not match the config (named).
        ValueError: a malformed config.json.
    """
    from policies.openvla.lora import load_adapter, load_heads, merge_lora

    ckpt = resolve_checkpoint_dir(ckpt_dir)
    verify_checkpoint(ckpt)
    raw = read_checkpoint_config(ckpt)
    config = VLAConfig.from_dict(raw["model"], where=f"{ckpt / CONFIG_FILE} model")
    stats_all = load_dataset_statistics(ckpt / STATS_FILE)
    stats = stats_all[select_unnorm_key(stats_all, raw["unnorm_key"])]
    processor = VLAProcessor.from_pretrained(ckpt)
    model = load_backbone(ckpt, raw, config, dtype, device, base)
    if raw["finetune"] == "lora":
        model = load_adapter(model, ckpt / ADAPTER_DIR)
        load_heads(model, ckpt)
        model = model.to(device=device)
        if merge:
            model = merge_lora(model)
    return model.eval(), processor, stats, raw


# ---- writing ------------------------------------------------------------------------------------------------
def save_tensors(state: Mapping[str, torch.Tensor], path: Path) -> None:
    """Write a state dict as safetensors (contiguous CPU copies)."""
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(path), metadata={"format": "pt"})


def write_model_files(directory: Path, model: Any, finetune: str, has_base: bool) -> None:
    """The weight files of the layout: model.safetensors (full) or adapter/ + heads (+ base_model) (lora)."""
    from policies.openvla.lora import save_adapter, save_heads

    if finetune == "full":
        save_tensors(model.state_dict(), directory / MODEL_FILE)
        return
    save_adapter(model, directory / ADAPTER_DIR)
    (directory / ADAPTER_DIR / "README.md").unlink(missing_ok=True)  # peft's model-card stub: not part of the layout
    save_heads(model, directory)
    if not has_base:
        save_tensors(backbone_state(model), directory / BASE_FILE)


def write_checkpoint_dir(
    target: str | os.PathLike,
    *,
    config: Mapping[str, Any],
    processor: Any,
    model: Any,
    norm_stats: Mapping[str, NormStats],
    extra: Callable[[Path], None] | None = None,
) -> Path:
    """Write one checkpoint directory atomically: config.json, statistics, processor, weights (``config``'s
    ``finetune`` / ``base`` choose the files), then ``extra(tmp)`` (e.g. the training state), then the manifest.

    Raises:
        OSError: the write failed (ENOSPC says "no space left on device"); ``target`` is unchanged.
    """
    with atomic_directory(target) as tmp:
        (tmp / CONFIG_FILE).write_text(json.dumps(dict(config), indent=2))
        save_dataset_statistics(tmp / STATS_FILE, norm_stats)
        processor.save_pretrained(tmp)
        write_model_files(tmp, model, config["finetune"], has_base=config.get("base") is not None)
        if extra is not None:
            extra(tmp)
        write_manifest(tmp)
    return Path(target)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(directory: Path) -> Path:
    """Record the size and SHA-256 of every file below ``directory`` in its manifest.json (call it last)."""
    files = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST_FILE):
        files[path.relative_to(directory).as_posix()] = {"bytes": path.stat().st_size, "sha256": _sha256(path)}
    return write_json_atomic(directory / MANIFEST_FILE, {"format": MANIFEST_FORMAT, "files": files})


def verify_checkpoint(ckpt: str | os.PathLike, deep: bool = False) -> bool:
    """Check a checkpoint against its manifest: every file present with its recorded size (and, ``deep``, its
    SHA-256). Returns False when the checkpoint has no manifest (written before manifests; not verifiable).

    Raises:
        CheckpointError: a missing, cut-short or changed file, or an unreadable manifest (each named).
    """
    ckpt = Path(ckpt)
    path = ckpt / MANIFEST_FILE
    if not path.is_file():
        return False
    try:
        manifest = json.loads(path.read_text())
        files = manifest["files"]
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: unreadable manifest ({err}); the checkpoint write was cut short") from None
    problems = []
    for rel, entry in files.items():
        file = ckpt / rel
        if not file.is_file():
            problems.append(f"{file}: missing")
        elif file.stat().st_size != entry["bytes"]:
            problems.append(f"{file}: {file.stat().st_size} bytes, the manifest says {entry['bytes']} (cut short?)")
        elif deep and _sha256(file) != entry["sha256"]:
            problems.append(f"{file}: contents differ from the manifest's sha256")
    if problems:
        raise CheckpointError(f"{ckpt}: broken checkpoint: " + "; ".join(problems))
    return True


def checkpoint_digest(path: str | os.PathLike) -> str:
    """The identity of a checkpoint's weights: SHA-256 over the relative names and bytes of its weight/config
    files (:data:`WEIGHT_SUFFIXES`; training_state/ and manifest.json excluded), in name order."""
    root = Path(path).resolve()
    h = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file() and TRAINING_STATE_DIR not in p.parts):
        if file.suffix in WEIGHT_SUFFIXES and file.name != MANIFEST_FILE:
            h.update(str(file.relative_to(root)).encode())
            with open(file, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()
