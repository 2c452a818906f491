"""Run checkpoints from the trainer's side: writing them with their training state, the ``last`` pointer and
rotation, finding and checking a checkpoint to resume from, and ``vla merge-lora``.

The directory layout, the writer of the files and the readers are ``policies.openvla.run_format`` (one place).
The training state (training_state/, written here through ``write_checkpoint_dir``'s ``extra``) is read back by
:func:`load_training_state` for ``--resume``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import shutil
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.files import replace_symlink
from envs.layout import ACTION_FRAME, ACTION_LAYOUT, CONTROL_MODE
from policies.normalization import NormStats, load_dataset_statistics
from policies.openvla.run_format import (
    CONFIG_FILE,
    FORMAT_VERSION,
    LAST_LINK,
    RUN_CHECKPOINT_FORMAT,
    STATS_FILE,
    TRAINING_STATE_DIR,
    load_checkpoint_model,
    read_checkpoint_config,
    resolve_checkpoint_dir,
    write_checkpoint_dir,
)
from train.train_config import LEGACY_FLAGS, RESUME_FREE_FIELDS, MergeLoraConfig, TrainConfig

CHECKPOINTS_DIR = "checkpoints"
_STEP_RE = re.compile(r"^step_(\d+)$")


class ResumeError(ValueError):
    """``--resume`` cannot continue this run (no checkpoint, or a config that changes the run)."""


@dataclasses.dataclass
class TrainingState:
    """What ``training_state/`` holds (see the module docstring)."""

    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: dict[str, torch.Tensor]
    state: dict[str, Any]


# ---- RNG ----------------------------------------------------------------------------------------------------
def capture_rng() -> dict[str, Any]:
    """This process's RNG states: torch CPU (+ CUDA) tensors, python and numpy states as JSON-ready lists."""
    py = random.getstate()
    npy = np.random.get_state()
    out: dict[str, Any] = {
        "torch_cpu": torch.get_rng_state(),
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [npy[0], npy[1].tolist(), int(npy[2]), int(npy[3]), float(npy[4])],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    return out


def restore_rng(rng: Mapping[str, torch.Tensor], state: Mapping[str, Any], rank: int) -> None:
    """Restore process ``rank``'s RNG states saved by :func:`capture_rng` (via rng.pt + state.json)."""
    torch.set_rng_state(rng["torch_cpu"][rank].clone())
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(rng["cuda"][rank]))
    py = state["python_rng"][rank]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npy = state["numpy_rng"][rank]
    np.random.set_state((npy[0], np.asarray(npy[1], dtype=np.uint32), npy[2], npy[3], npy[4]))


# ---- writing ------------------------------------------------------------------------------------------------
def checkpoint_config(
    *,
    model_config: Any,
    cfg: TrainConfig,
    data: Mapping[str, Any],
    unnorm_key: str,
    finetune: str,
    step: int,
    trainable_params: int,
    total_params: int,
) -> dict[str, Any]:
    """The config.json payload (see the module docstring); ``data`` = DataConfig dict + image_size + tasks."""
    return {
        "format": RUN_CHECKPOINT_FORMAT,
        "format_version": FORMAT_VERSION,
        "model": model_config.to_dict(),
        "data": dict(data),
        "train": cfg.to_dict(),
        "action_layout": list(ACTION_LAYOUT),
        "control_mode": CONTROL_MODE,
        "action_frame": ACTION_FRAME,
        "norm_mode": cfg.data.norm_mode,
        "unnorm_key": unnorm_key,
        "finetune": finetune,
        "base": str(cfg.model.base.resolve()) if cfg.model.base is not None else None,
        "step": int(step),
        "trainable_params": int(trainable_params),
        "total_params": int(total_params),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_checkpoint(
    run_dir: str | os.PathLike,
    step: int,
    *,
    model: Any,
    processor: Any,
    norm_stats: Mapping[str, NormStats],
    config: Mapping[str, Any],
    training_state: TrainingState | None,
    keep_last: int | None = None,
) -> Path:
    """Write ``RUN/checkpoints/step_{step}`` atomically, point ``last`` at it, then apply ``keep_last`` rotation.

    Args:
        model: the unwrapped model (VLA for full, peft model for lora).
        config: :func:`checkpoint_config` output (its ``finetune`` / ``base`` choose the weight files).
        training_state: None for an inference-only directory (merge-lora writes its own).

    Returns:
        the checkpoint directory.
    """
    root = Path(run_dir) / CHECKPOINTS_DIR
    target = root / f"step_{int(step)}"

    def write_state(tmp: Path) -> None:
        state_dir = tmp / TRAINING_STATE_DIR
        state_dir.mkdir()
        torch.save(training_state.optimizer, state_dir / "optimizer.pt")
        torch.save(training_state.scheduler, state_dir / "scheduler.pt")
        torch.save(training_state.rng, state_dir / "rng.pt")
        (state_dir / "state.json").write_text(json.dumps(training_state.state, indent=1))

    write_checkpoint_dir(
        target,
        config=config,
        processor=processor,
        model=model,
        norm_stats=norm_stats,
        extra=write_state if training_state is not None else None,
    )
    update_last_pointer(root, target.name)
    if keep_last is not None:
        rotate_checkpoints(root, keep_last)
    return target


def update_last_pointer(root: Path, name: str) -> None:
    """Atomically and durably make ``root/last`` a relative symlink to ``root/name``."""
    replace_symlink(root / LAST_LINK, name)


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """(step, dir) of every complete ``step_N`` directory under ``root``, by step."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_RE.match(p.name)) and p.is_dir()]
    return sorted(found)


def rotate_checkpoints(root: Path, keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` checkpoints (never the one ``last`` points at); return deleted."""
    keep = os.path.realpath(root / LAST_LINK) if (root / LAST_LINK).exists() else None
    deleted = []
    for _, path in list_checkpoints(root)[:-keep_last]:
        if os.path.realpath(path) != keep:
            shutil.rmtree(path)
            deleted.append(path)
    return deleted


def remove_stale_temporaries(root: Path) -> None:
    """Remove leftovers of interrupted writes (``.step_N.tmp-*`` directories, ``.last.tmp-*`` links)."""
    if not root.is_dir():
        return
    for path in root.iterdir():
        if path.name.startswith((".step_", f".{LAST_LINK}.tmp-")):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


# ---- resume -------------------------------------------------------------------------------------------------
def last_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """``RUN/checkpoints/last`` resolved when it points at a checkpoint folder (not verified), else None."""
    last = Path(run_dir) / CHECKPOINTS_DIR / LAST_LINK
    return last.resolve() if (last / CONFIG_FILE).is_file() else None


def checkpoint_problem(ckpt: Path, resumable: bool = True) -> str | None:
    """Why ``ckpt`` cannot be used (None: it can): a file cut short or missing against the manifest, an unreadable
    config.json, or (``resumable``) a training state that does not load."""
    from policies.openvla.run_format import verify_checkpoint
    from policies.openvla.weights import CheckpointError

    try:
        verified = verify_checkpoint(ckpt)  # sizes against the manifest (cheap)
        read_checkpoint_config(ckpt)
        if resumable and not verified:  # written before manifests: the training state must load
            load_training_state(ckpt)
        elif resumable:
            names = ("optimizer.pt", "scheduler.pt", "rng.pt", "state.json")
            missing = [n for n in names if not (ckpt / TRAINING_STATE_DIR / n).is_file()]
            if missing:
                raise ResumeError(f"{ckpt / TRAINING_STATE_DIR}: missing {missing}")
    except (CheckpointError, ResumeError, ValueError, OSError, RuntimeError, EOFError) as err:
        return " ".join(str(err).split())[:400]
    return None


def find_resume_checkpoint(run_dir: str | os.PathLike, warn: bool = True) -> Path | None:
    """The newest checkpoint of the run that is complete and resumable, or None when there is none.

    ``RUN/checkpoints/last`` comes first; when it points at a missing folder or a broken checkpoint (a file cut
    short, an unreadable training state), the newest complete ``step_N`` is taken instead, with a warning naming
    what was skipped and why.
    """
    root = Path(run_dir) / CHECKPOINTS_DIR
    last = root / LAST_LINK
    candidates = [last.resolve()] if last.is_symlink() or last.exists() else []
    candidates += [path.resolve() for _, path in reversed(list_checkpoints(root)) if path.resolve() not in candidates]
    skipped = []
    for ckpt in candidates:
        problem = "missing" if not ckpt.is_dir() else checkpoint_problem(ckpt)
        if problem is None:
            if skipped and warn:
                warnings.warn(f"resuming from {ckpt.name}: skipped " + "; ".join(skipped), UserWarning, stacklevel=2)
            return ckpt
        skipped.append(f"{ckpt.name} ({problem})")
    return None


def check_resume_config(saved: Mapping[str, Any], cfg: TrainConfig, where: str | Path) -> None:
    """Refuse a resume whose config changes the run.

    Every TrainConfig flag outside :data:`train.train_config.RESUME_FREE_FIELDS` must be equal (as given, so
    ``lr_milestones`` None = "80 % of steps" matches None); ``data`` / ``base`` compare as resolved paths. A
    checkpoint older than a flag counts as that flag's default; renamed flags are read under their new names.

    Raises:
        ResumeError: lists each differing field with the checkpoint's and the new value.
    """
    from common.config_files import flag_defaults

    current = cfg.to_dict()
    saved = {LEGACY_FLAGS.get(k, k): v for k, v in saved.items()}
    defaults = flag_defaults(TrainConfig)
    diffs = []
    for key, value in current.items():
        if key in RESUME_FREE_FIELDS:
            continue
        old = saved.get(key, defaults.get(key, "<absent>"))
        if key in ("data", "base") and value is not None and old not in (None, "<absent>"):
            value, old = str(Path(value).resolve()), str(Path(old).resolve())
        if old != value:
            diffs.append(f"{key}: checkpoint {old!r} vs now {value!r}")
    if diffs:
        raise ResumeError(
            f"--resume from {where}: the config changes the run in {len(diffs)} field(s) (only "
            f"{sorted(RESUME_FREE_FIELDS)} may change): " + "; ".join(diffs)
        )


def load_training_state(ckpt_dir: str | os.PathLike) -> TrainingState:
    """Read ``training_state/`` (tensors with ``torch.load(weights_only=True)``).

    Raises:
        ResumeError: the directory has no (complete) training state, e.g. a merged checkpoint.
    """
    state_dir = Path(ckpt_dir) / TRAINING_STATE_DIR
    names = ("optimizer.pt", "scheduler.pt", "rng.pt", "state.json")
    missing = [n for n in names if not (state_dir / n).is_file()]
    if missing:
        raise ResumeError(f"{state_dir}: missing {missing}; this checkpoint cannot be resumed")
    load = lambda n: torch.load(state_dir / n, map_location="cpu", weights_only=True)  # noqa: E731
    return TrainingState(
        optimizer=load("optimizer.pt"),
        scheduler=load("scheduler.pt"),
        rng=load("rng.pt"),
        state=json.loads((state_dir / "state.json").read_text()),
    )


# ---- merge-lora ---------------------------------------------------------------------------------------------
def merge_lora_checkpoint(
    ckpt: str | os.PathLike, out: str | os.PathLike, base: str | os.PathLike | None = None, overwrite: bool = False
) -> Path:
    """Merge a LoRA checkpoint's adapter into its base and write a finetune=full directory at ``out`` (atomic).

    config.json keeps the source's fields with ``finetune: "full"`` and ``merged_from``; no training_state/.

    Raises:
        FileExistsError: ``out`` exists and not ``overwrite``. ValueError: the checkpoint is not a LoRA one.
        FileNotFoundError / CheckpointError: see :func:`load_checkpoint_model`.
    """
    src = resolve_checkpoint_dir(ckpt)
    raw = read_checkpoint_config(src)
    if raw["finetune"] != "lora":
        raise ValueError(f"{src}: finetune is {raw['finetune']!r}; merge-lora needs a LoRA checkpoint")
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out}: already exists (pass --overwrite to replace it)")
    model, processor, _, _ = load_checkpoint_model(src, base=base, merge=True)
    config = {**raw, "finetune": "full", "merged_from": str(src), "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    return write_checkpoint_dir(
        out, config=config, processor=processor, model=model, norm_stats=load_dataset_statistics(src / STATS_FILE)
    )


def run_merge_lora(cfg: MergeLoraConfig) -> int:
    """``vla merge-lora CKPT OUT``: merge and print where the result went; returns 0 (errors propagate)."""
    out = merge_lora_checkpoint(cfg.checkpoint, cfg.out, base=cfg.base, overwrite=cfg.overwrite)
    print(f"merged {resolve_checkpoint_dir(cfg.checkpoint)} -> {out} (finetune=full)")
    return 0
