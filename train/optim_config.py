"""Config dataclass of the optimiser (``OptimConfig``, the ``optimisation`` group of ``vla train``).

Light on purpose (no torch import), like train.train_config, which re-exports it.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from common.config_files import named_number

LrSchedule = Literal["multistep", "cosine", "constant"]


def int_at_least(owner: object, minimum: int, *names: str) -> None:
    """Check that each field ``names`` of ``owner`` is an int (not a bool) >= ``minimum``; ValueError naming it."""
    for name in names:
        value = getattr(owner, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _module_scale(item: str) -> tuple[str, float]:
    """``"MODULE=FACTOR"`` -> (module path, factor > 0); ValueError naming the item otherwise."""
    parsed = named_number(item)
    if parsed is None or not parsed[1] > 0:
        raise ValueError(f"lr_scale: expected MODULE=FACTOR > 0 (e.g. keypoint_encoder=10), got {item!r}")
    return parsed


@dataclasses.dataclass
class OptimConfig:
    """Optimisation: AdamW steps, batch and learning-rate schedule."""

    steps: int = 5000
    """Optimizer steps to train for (a resumed run may raise it)."""
    batch_size: int = 16
    """Samples per device per micro-batch."""
    grad_accum: int = 1
    """Micro-batches accumulated per optimizer step."""
    lr: float = 5e-4
    """Peak learning rate of AdamW (OpenVLA-OFT: 5e-4)."""
    lr_schedule: LrSchedule = "multistep"
    """multistep, cosine or constant."""
    lr_milestones: tuple[int, ...] | None = None
    """Steps at which multistep multiplies the lr by lr_gamma (default: 80 % of --steps)."""
    lr_gamma: float = 0.1
    """Multistep decay factor."""
    warmup_steps: int = 0
    """Linear warmup from 0 to --lr over this many steps (all schedules)."""
    weight_decay: float = 0.01
    """AdamW weight decay (torch's default, which OpenVLA-OFT's finetune.py uses)."""
    max_grad_norm: float | None = 1.0
    """Clip the global gradient norm to this (None: no clipping; the norm is still logged)."""
    lr_scale: tuple[str, ...] = ()
    """MODULE=FACTOR items: the lr of the model's submodule MODULE (e.g. keypoint_encoder=10) times FACTOR."""

    def __post_init__(self) -> None:
        int_at_least(self, 1, "steps", "batch_size", "grad_accum")
        int_at_least(self, 0, "warmup_steps")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 < self.lr_gamma <= 1:
            raise ValueError(f"lr_gamma must be in (0, 1], got {self.lr_gamma}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0 or None, got {self.max_grad_norm}")
        if self.warmup_steps >= self.steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be < steps ({self.steps})")
        scales = [_module_scale(str(x)) for x in self.lr_scale]
        if len({m for m, _ in scales}) != len(scales):
            raise ValueError(f"lr_scale names a module twice: {list(self.lr_scale)}")
        self.lr_scale = tuple(f"{m}={f:g}" for m, f in scales)
        if self.lr_milestones is not None:
            self.lr_milestones = tuple(int(m) for m in self.lr_milestones)
            if list(self.lr_milestones) != sorted(set(self.lr_milestones)) or any(m < 1 for m in self.lr_milestones):
                raise ValueError(f"lr_milestones must be strictly increasing steps >= 1, got {self.lr_milestones}")

    @property
    def lr_scales(self) -> dict[str, float]:
        """``lr_scale`` as {module path: factor} ({} when none are given)."""
        return dict(_module_scale(x) for x in self.lr_scale)

    def milestones(self) -> tuple[int, ...]:
        """Multistep milestones: ``lr_milestones`` or 80 % of ``steps`` (the seeds decay at 40k of 50k)."""
        if self.lr_milestones is not None:
            return tuple(self.lr_milestones)
        return (max(1, int(round(0.8 * self.steps))),)
