"""Helpers of the trainer / checkpoint tests: a micro model config, synthetic data folders, fixed inputs.

The micro model is the tiny preset shrunk further (2-block ViTs of width 32, Llama 32 x 2 layers, 32 px views of
2 patches) so that a training step takes ~20 ms on one CPU thread; tests pass ``threads=1`` (two threads on a
shared 2-core machine are much slower for models this small).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from synthetic_episodes import write_episode

MICRO = {
    "image_size": 32,
    "patch_size": 16,
    "n_action_bins": 32,
    "dino": {"width": 32, "depth": 2, "heads": 2, "mlp_dim": 64, "registers": 4},
    "siglip": {"width": 32, "depth": 2, "heads": 2, "mlp_dim": 64},
    "llm": {"hidden_size": 32, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 64},
}


def write_dataset(folder: Path, episodes: int = 3, num_steps: int = 20) -> Path:
    """``episodes`` synthetic episodes (head + left_wrist 32 px, proprio, instructions) in ``folder``."""
    for i in range(episodes):
        write_episode(folder / f"episode_{i}.hdf5", episode=i, num_steps=num_steps)
    return folder


def micro_settings(data: Path, out: Path, **overrides: Any) -> dict[str, Any]:
    """The flat TrainConfig settings of the micro model: 4 steps of 4 samples, chunk 4, proprio, no workers, 1
    thread, float32 (``auto`` would pick bf16 on CPUs where it is fast, and the tests must not depend on the CPU
    kind), validation every 2 steps."""
    settings: dict[str, Any] = dict(
        data=data,
        out=out,
        steps=4,
        batch_size=4,
        chunk_size=4,
        use_proprio=True,
        model_overrides=MICRO,
        num_workers=0,
        log_every=1,
        save_every=2,
        val_every=2,
        val_batches=2,
        progress=False,
        threads=1,
        mixed_precision="no",
    )
    settings.update(overrides)
    return settings


def micro_config(data: Path, out: Path, **overrides: Any):
    """A TrainConfig of :func:`micro_settings`."""
    from train.train_config import TrainConfig

    return TrainConfig.from_flat(**micro_settings(data, out, **overrides))


def fixed_inputs(processor: Any, norm_stats: Any, n: int = 3, seed: int = 0) -> dict[str, Any]:
    """Eval-mode model inputs for ``n`` random frames / proprio (normalized with ``norm_stats``)."""
    import torch

    rng = np.random.default_rng(seed)
    cams = len(processor.settings.cameras)
    images = rng.integers(0, 256, (n, cams, 32, 32, 3), dtype=np.uint8)
    inputs = processor(images, ["pick up the cube", "raise the block", "grasp the cube"][:n], train=False)
    proprio = norm_stats.proprio.normalize(rng.normal(5.0, 3.0, (n, 14)), "bounds_q99")
    inputs["proprio"] = torch.from_numpy(proprio)
    return inputs


def predict(model: Any, processor: Any, norm_stats: Any) -> Any:
    """(3, H, 14) normalized chunk predicted on :func:`fixed_inputs`."""
    return model.predict_action_chunk(**fixed_inputs(processor, norm_stats))


def write_micro_yaml(path: Path, data: Path, out: Path, **overrides: Any) -> Path:
    """A ``vla train --config`` YAML file of :func:`micro_settings` without validation (for subprocess runs)."""
    import yaml

    settings = micro_settings(str(data), str(out), val_every=10**6, **overrides)
    path.write_text(yaml.safe_dump(settings))
    return path
