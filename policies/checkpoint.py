"""The ``checkpoint:PATH`` policy: a trained VLA checkpoint directory as a Policy.

    policy = make_policy("checkpoint:runs/demo/checkpoints/last")
    chunk = policy.predict_action_chunk(obs)        # (B, H, 14) float32, absolute env actions
    make_policy("checkpoint:runs/demo/checkpoints/last?dtype=auto")   # float32 (default) | bfloat16 | auto

Inference dtype: ``float32`` by default (results then do not depend on the CPU kind); ``bfloat16``; or ``auto``,
bf16 on a CUDA device with bf16 support or on a CPU where ``envs.machine.bf16_probe`` measures bf16 faster, else
float32. Asking for ``bfloat16`` on a CPU where it is slow warns with the measured ratio.

Per call: the policy's cameras are stacked in the checkpoint's view order (B, V, H, W, 3) and preprocessed by the
checkpoint's processor in eval mode (resize, center crop when trained with crops, the two normalizations, the
OpenVLA prompt); proprio is normalized with the checkpoint's ``dataset_statistics.json``; the model predicts a
normalized (B, H, A) chunk that is unnormalized with the same statistics and mode. Checkpoints trained on
``relative_action`` are integrated from the measured proprio (a[k] = proprio + sum_{j<k} delta[j]). Gripper
values are clipped to the env's [-1, 1]. A checkpoint trained with ``--constant-instruction`` (an instruction-blind
baseline) gets that string in place of every instruction. Nothing here reads the training data.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from envs.layout import ACTION_LAYOUT, CONTROL_MODE, GRIPPER_DIMS
from policies.base import Observation, PolicyMetadata, register_policy


def _square_size(size: Any) -> int | None:
    """The recorded frame side (px) from ``image_size`` stored as an int or [H, W]; None when not square."""
    if size is None:
        return None
    if isinstance(size, (list, tuple)):
        return int(size[0]) if len(set(size)) == 1 else None
    return int(size)


class CheckpointPolicy:
    """A VLA (model + processor + norm stats + its config) behind the Policy protocol.

    Build with :meth:`from_dir` (a checkpoint directory) or directly from in-memory components (in-loop
    evaluation during training). Stateless between calls: :meth:`reset` has nothing to forget.
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        norm_stats: Any,
        config: dict,
        name: str = "checkpoint",
        extra: dict | None = None,
        weights_digest: str | None = None,
        checkpoint_path: str | None = None,
    ) -> None:
        data = config.get("data", {})
        model_cfg = model.config
        self.model = model.eval()
        self.processor = processor
        self.stats = norm_stats
        self.norm_mode = config.get("norm_mode", model_cfg.norm_mode)
        self.action_key = data.get("action_key", "action")
        self.constant_instruction = data.get("constant_instruction") or None
        self.use_proprio = bool(model_cfg.proprio_dim)
        if self.use_proprio and norm_stats.proprio is None:
            raise ValueError(f"{name}: the model takes proprio but dataset_statistics.json has no proprio statistics")
        if tuple(config.get("action_layout", ACTION_LAYOUT)) != ACTION_LAYOUT:
            raise ValueError(
                f"{name}: checkpoint action layout {config.get('action_layout')} is not {list(ACTION_LAYOUT)}"
            )
        self.metadata = PolicyMetadata(
            name=name,
            cameras=tuple(model_cfg.cameras),
            chunk_size=int(model_cfg.chunk_size),
            action_dim=int(model_cfg.action_dim),
            control_mode=config.get("control_mode", CONTROL_MODE),
            image_size=_square_size(data.get("image_size")),
            # A language-conditioned VLA may be rolled out on any task (e.g. to measure transfer); the tasks it was
            # trained on are recorded, not enforced.
            weights_digest=weights_digest,
            checkpoint_path=checkpoint_path,
            trained_visual_quality=tuple(data.get("visual_quality") or ()),
            extra={
                "trained_tasks": list(data.get("tasks") or ()),
                "norm_mode": self.norm_mode,
                "action_key": self.action_key,
                "unnorm_key": config.get("unnorm_key"),
                "step": config.get("step"),
                "constant_instruction": self.constant_instruction,
                **(extra or {}),
            },
        )

    @classmethod
    def from_dir(cls, path: str | os.PathLike, device: str | None = None, dtype: str = "float32") -> CheckpointPolicy:
        """Load ``path`` (a ``step_N`` directory or the ``last`` link).

        Raises:
            FileNotFoundError: ``path`` is not a directory.
            ValueError / CheckpointError: the directory is incomplete or inconsistent (message names the file).
        """
        import torch

        from policies.openvla.run_format import checkpoint_digest, load_checkpoint_model

        given = Path(path)
        if not given.is_dir():
            raise FileNotFoundError(f"checkpoint:{path}: not a directory")
        resolved = given.resolve()
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = resolve_dtype(dtype, device)
        torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
        model, processor, stats, config = load_checkpoint_model(resolved, device=device, dtype=torch_dtype)
        digest = checkpoint_digest(resolved)
        extra = {"device": device, "dtype": dtype}
        return cls(
            model,
            processor,
            stats,
            config,
            name=f"checkpoint:{path}",
            extra=extra,
            weights_digest=digest,
            checkpoint_path=str(resolved),
        )

    def reset(self) -> None:
        """Nothing to forget: every call predicts from the current observation only."""

    def predict_action_chunk(self, obs: Observation) -> np.ndarray:
        """(B, H, 14) float32 absolute actions for a batched observation (see the module docstring).

        Raises:
            KeyError: a camera the checkpoint needs is missing from ``obs.images``.
        """
        import torch

        missing = [c for c in self.metadata.cameras if c not in obs.images]
        if missing:
            raise KeyError(f"{self.metadata.name}: observation lacks camera(s) {missing}; has {sorted(obs.images)}")
        images = np.stack([np.asarray(obs.images[c]) for c in self.metadata.cameras], axis=1)  # (B, V, H, W, 3)
        instructions = list(obs.instruction)
        if self.constant_instruction:  # an instruction-blind checkpoint sees the string it was trained with
            instructions = [self.constant_instruction] * len(instructions)
        inputs = self.processor(images, instructions, train=False)
        device = next(self.model.parameters()).device
        inputs = {k: v.to(device) for k, v in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        proprio = None
        if self.use_proprio:
            p = self.stats.proprio.normalize(np.asarray(obs.proprio, dtype=np.float32), self.norm_mode)
            proprio = torch.as_tensor(p, device=device, dtype=self.model.dtype)
        with torch.inference_mode():
            pred = self.model.predict_action_chunk(**inputs, proprio=proprio)
        actions = self.stats.action.unnormalize(pred.float().cpu().numpy(), self.norm_mode)
        if self.action_key == "relative_action":
            actions = np.asarray(obs.proprio, dtype=np.float32)[:, None, :] + np.cumsum(actions, axis=1) - actions
        actions[..., list(GRIPPER_DIMS)] = np.clip(actions[..., list(GRIPPER_DIMS)], -1.0, 1.0)
        return actions.astype(np.float32)


DTYPES = ("float32", "bfloat16", "auto")


def resolve_dtype(dtype: str, device: str) -> str:
    """``float32`` | ``bfloat16`` for ``dtype`` in :data:`DTYPES` on ``device`` (see the module docstring).

    Raises:
        ValueError: an unknown dtype.
    """
    from envs.machine import resolve_precision

    if dtype not in DTYPES:
        raise ValueError(f"checkpoint policy dtype must be one of {list(DTYPES)}, got {dtype!r}")
    if dtype == "float32":
        return dtype
    kind = "cuda" if str(device).startswith("cuda") else "cpu"
    precision, _ = resolve_precision("bf16" if dtype == "bfloat16" else "auto", kind)
    return "bfloat16" if precision == "bf16" else "float32"


def split_spec_options(arg: str) -> tuple[str, dict[str, str]]:
    """``PATH?key=value&key2=value2`` -> (PATH, {key: value}); a PATH without ``?`` has no options.

    Raises:
        ValueError: an option without ``=``.
    """
    path, sep, query = arg.partition("?")
    options: dict[str, str] = {}
    for part in filter(None, query.split("&")) if sep else ():
        key, eq, value = part.partition("=")
        if not eq:
            raise ValueError(f"checkpoint:{arg}: option {part!r} must be key=value")
        options[key] = value
    return path, options


@register_policy("checkpoint", usage="checkpoint:PATH[?dtype=float32|bfloat16|auto]")
def _make_checkpoint_policy(arg: str | None, **kwargs: Any) -> CheckpointPolicy:
    """``checkpoint:PATH`` or ``checkpoint:PATH?dtype=float32|bfloat16|auto``."""
    if not arg:
        raise ValueError("checkpoint policy needs a path: checkpoint:RUN/checkpoints/last")
    path, options = split_spec_options(arg)
    unknown = sorted(set(options) - {"dtype"})
    if unknown:
        raise ValueError(f"checkpoint:{arg}: unknown option(s) {unknown}; known: ['dtype']")
    dtype = options.get("dtype", kwargs.get("dtype", "float32"))
    return CheckpointPolicy.from_dir(path, device=kwargs.get("device"), dtype=dtype)
