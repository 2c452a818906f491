"""``--resume``: find the checkpoint, refuse runs that would differ, restore optimizer / scheduler / RNG state.

What may change on resume is :data:`train.train_config.RESUME_FREE_FIELDS`; the data folder must give the same
statistics and sample count, and the number of processes must be the same (it sets the global batch and the
data order, :mod:`train.sampler`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from train.checkpointing import (
    CHECKPOINTS_DIR,
    ResumeError,
    check_resume_config,
    checkpoint_problem,
    find_resume_checkpoint,
    list_checkpoints,
    load_training_state,
    restore_rng,
)
from train.train_config import TrainConfig


def resume_source(cfg: TrainConfig, folder_existed: bool = True) -> tuple[Path | None, dict | None]:
    """(checkpoint dir, its config.json) with --resume, else (None, None); reads only.

    With --resume the newest complete checkpoint is used (``find_resume_checkpoint``); a run folder
    (``folder_existed``: it was there before this call) that has none yet, because an earlier attempt stopped
    before its first save, starts from step 0 with a warning, so that a restart never needs a hand repair.

    Raises:
        ResumeError: --resume on a folder that did not exist, or whose checkpoints are all broken, or with a
            config that changes the run; a run folder that already has checkpoints without --resume.
    """
    from policies.openvla.run_format import read_checkpoint_config

    ckpt = find_resume_checkpoint(cfg.out)
    if not cfg.resume:
        existing = list_checkpoints(cfg.out / CHECKPOINTS_DIR)
        if existing:
            raise ResumeError(
                f"{cfg.out}: already has checkpoints ({existing[-1][1].name} ...); pass --resume to "
                "continue this run, or choose another --out"
            )
        return None, None
    if ckpt is None:
        broken = list_checkpoints(cfg.out / CHECKPOINTS_DIR)
        if broken:  # never silently restart over checkpoints that might be repaired
            raise ResumeError(
                f"--resume: no complete checkpoint in {cfg.out / CHECKPOINTS_DIR} ({broken[-1][1].name} "
                f"{checkpoint_problem(broken[-1][1])}); remove the broken step_* folders to start over"
            )
        if not folder_existed:  # not even an earlier attempt: a typo in --out?
            raise ResumeError(f"--resume: {cfg.out} does not exist; nothing to resume (start without --resume)")
        warnings.warn(
            f"--resume: {cfg.out} has no checkpoint yet (stopped before the first save); starting from step 0",
            UserWarning,
            stacklevel=2,
        )
        return None, None
    raw = read_checkpoint_config(ckpt)
    check_resume_config(raw.get("train", {}), cfg, ckpt)
    return ckpt, raw


def check_same_data(prepared: Any, ckpt: Path) -> None:
    """Refuse a resume whose data folder gives other statistics than the checkpoint's (episodes changed)."""
    from policies.normalization import load_dataset_statistics

    saved = load_dataset_statistics(ckpt / "dataset_statistics.json")
    now = {k: v.to_json() for k, v in prepared.all_stats().items()}
    if {k: v.to_json() for k, v in saved.items()} != now:
        raise ResumeError(
            f"--resume from {ckpt}: the data folder's statistics (or unnorm_key) differ from the "
            "checkpoint's dataset_statistics.json; the episodes changed since the run started"
        )


def restore_training_state(
    ckpt: Path, optimizer: Any, scheduler: Any, accelerator: Any, num_samples: int, cfg: TrainConfig
) -> int:
    """Load optimizer / scheduler state (the lr follows the CURRENT schedule) and this process's RNG; return the
    step reached. Raises ResumeError on another process count, sample count or a finished run."""
    ts = load_training_state(ckpt)
    st = ts.state
    if st["world_size"] != accelerator.num_processes:
        raise ResumeError(
            f"--resume from {ckpt}: it ran on {st['world_size']} process(es), now "
            f"{accelerator.num_processes}; the global batch and data order would change"
        )
    if st["num_train_samples"] != num_samples:
        raise ResumeError(f"--resume from {ckpt}: {st['num_train_samples']} training samples then, {num_samples} now")
    if st["step"] > cfg.optim.steps:
        raise ResumeError(f"--resume from {ckpt}: already at step {st['step']} > --steps {cfg.optim.steps}")
    if accelerator.is_main_process:
        check_schedule_continuity(st, cfg)
    optimizer.load_state_dict(ts.optimizer)
    scheduler.load_state_dict(ts.scheduler)
    # The saved param-group lr came from the old schedule; set the next step's lr from the current one.
    for group, base, fn in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * fn(scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
    restore_rng(ts.rng, st, accelerator.process_index)
    return int(st["step"])


def check_schedule_continuity(st: Mapping[str, Any], cfg: TrainConfig) -> None:
    """Warn when the new --steps changes the lr the finished steps were trained with (not an exact resume)."""
    from train.model_setup import lr_lambda

    old = lr_lambda(
        cfg.optim.lr_schedule, st["steps"], cfg.optim.warmup_steps, tuple(st["lr_milestones"]), cfg.optim.lr_gamma
    )
    new = lr_lambda(
        cfg.optim.lr_schedule, cfg.optim.steps, cfg.optim.warmup_steps, cfg.milestones(), cfg.optim.lr_gamma
    )
    changed = [k for k in range(int(st["step"])) if old(k) != new(k)]
    if changed:
        warnings.warn(
            f"--steps {st['steps']} -> {cfg.optim.steps} changes the {cfg.optim.lr_schedule} lr schedule of steps "
            f"already trained (first: step {changed[0] + 1}); the resumed run continues with the new "
            "schedule but is not identical to an uninterrupted run",
            UserWarning,
            stacklevel=3,
        )
