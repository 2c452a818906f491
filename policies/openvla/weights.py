"""Putting tensors into a VLA with exact checks: every key present, none extra, every shape right.

The checkpoint rooms build on this: ``openvla_format`` (OpenVLA(-OFT) directories), ``run_format`` (the
checkpoints ``vla train`` writes) and ``adapt`` (a base model given a fine-tune's config).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from policies.openvla.config import VLAConfig
from policies.openvla.model import VLA


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


def shapes(state: Mapping[str, torch.Tensor]) -> dict[str, tuple]:
    """``{key: shape}`` of a state dict."""
    return {k: tuple(v.shape) for k, v in state.items()}


def strip_module(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict without DDP's ``module.`` key prefix."""
    return {k[len("module.") :] if k.startswith("module.") else k: v for k, v in state.items()}


def load_state_strict(module: torch.nn.Module, path: Path, keys: Mapping[str, torch.Tensor] | None = None) -> None:
    """Copy every tensor of the safetensors file ``path`` into ``keys`` (default ``module.state_dict()``).

    Raises:
        FileNotFoundError: no file. CheckpointError: missing / unexpected / mis-shaped keys (listed).
    """
    from safetensors import safe_open

    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found")
    ours = dict(module.state_dict() if keys is None else keys)
    try:
        with safe_open(path, framework="pt") as f:
            found = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
            key_report(str(path), {k: tuple(v.shape) for k, v in ours.items()}, found)
            with torch.no_grad():
                for key in found:
                    ours[key].copy_(f.get_tensor(key))
    except CheckpointError:
        raise
    except Exception as err:  # safetensors raises its own error types for cut-short or corrupt files
        raise CheckpointError(f"{path}: unreadable safetensors file ({type(err).__name__}: {err})") from None
