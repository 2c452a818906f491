"""LoRA fine-tuning with peft, plus the fully trained heads saved beside the adapter.

Defaults follow OpenVLA-OFT ``vla-scripts/finetune.py``: r 32, alpha min(r, 16) = 16, dropout 0. Targets: every
linear layer of the LLM decoder and of the projector -- never ``lm_head`` nor the heads (peft's "all-linear" on a
plain module would also wrap those, so the default is an explicit regex). The heads (action head, proprio
projector, FiLM) stay fully trainable and are saved separately as ``heads.safetensors``.

Adapters are saved in peft's own format (``adapter_config.json`` + ``adapter_model.safetensors``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from policies.openvla.model import HEAD_MODULES, VLA

DEFAULT_TARGET_MODULES = (
    r"^(language_model\.model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
    r"|projector\.fc\d)$"
)
"""peft regex (full match on module names): Llama attention + MLP projections and the projector layers."""
HEADS_FILE = "heads.safetensors"


def apply_lora(
    model: VLA, r: int = 32, alpha: int = 16, dropout: float = 0.0, target_modules: str | list[str] | None = None
) -> Any:
    """Wrap ``model`` with LoRA adapters; base weights frozen, LoRA and heads trainable.

    Args:
        model: a VLA (not yet wrapped).
        r, alpha, dropout: LoRA rank, scaling numerator (scale = alpha / r) and dropout.
        target_modules: peft ``target_modules`` (a regex string or names); None = :data:`DEFAULT_TARGET_MODULES`.

    Returns:
        ``peft.PeftModel``; attribute access (``predict_action_chunk``, ``config``, heads) forwards to the VLA,
        calling it runs ``VLA.forward``.

    Raises:
        ValueError: bad hyper-parameters, an already wrapped model, or targets that hit lm_head / a head.
    """
    from peft import LoraConfig, get_peft_model

    if r < 1 or alpha <= 0 or not 0 <= dropout < 1:
        raise ValueError(
            f"apply_lora: need r >= 1, alpha > 0, 0 <= dropout < 1; got r={r}, alpha={alpha}, dropout={dropout}"
        )
    if hasattr(model, "peft_config"):
        raise ValueError("apply_lora: the model already has LoRA adapters")
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        bias="none",
        target_modules=target_modules if target_modules is not None else DEFAULT_TARGET_MODULES,
    )
    requires_grad = {name: p.requires_grad for name, p in model.named_parameters()}
    peft_model = get_peft_model(model, config)
    wrapped = [n for n, m in peft_model.base_model.model.named_modules() if hasattr(m, "lora_A")]
    bad = [n for n in wrapped if n.startswith(HEAD_MODULES) or n.endswith("lm_head")]
    if bad:
        peft_model.unload()  # leave the caller's model as it was
        for name, p in model.named_parameters():
            p.requires_grad_(requires_grad[name])
        raise ValueError(f"apply_lora: target_modules must not include lm_head or the heads, got {bad[:5]}")
    for name in HEAD_MODULES:
        head = getattr(model, name)
        if head is not None:
            head.requires_grad_(True)
    return peft_model


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts (each tensor counted once)."""
    seen: dict[int, nn.Parameter] = {id(p): p for p in model.parameters()}
    trainable = sum(p.numel() for p in seen.values() if p.requires_grad)
    return trainable, sum(p.numel() for p in seen.values())


def save_adapter(model: Any, directory: str | os.PathLike) -> Path:
    """peft ``save_pretrained``: adapter_config.json + adapter_model.safetensors (LoRA weights only).

    Raises:
        ValueError: ``model`` has no adapters.
    """
    if not hasattr(model, "peft_config"):
        raise ValueError("save_adapter: model has no LoRA adapters (call apply_lora first)")
    directory = Path(directory)
    model.save_pretrained(str(directory), safe_serialization=True)
    return directory


def load_adapter(model: VLA, directory: str | os.PathLike, is_trainable: bool = False) -> Any:
    """Attach the adapter saved in ``directory`` to a plain VLA; returns the ``PeftModel``.

    Raises:
        FileNotFoundError: adapter files missing.
    """
    from peft import PeftModel

    directory = Path(directory)
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory / name}: not found")
    return PeftModel.from_pretrained(model, str(directory), is_trainable=is_trainable)


def merge_lora(model: Any) -> VLA:
    """Fold the LoRA weights into the base layers and return the plain VLA (for deployment / save_vla)."""
    if not hasattr(model, "merge_and_unload"):
        raise ValueError("merge_lora: model has no LoRA adapters")
    return model.merge_and_unload()


def _unwrap(model: Any) -> VLA:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def save_heads(model: Any, directory: str | os.PathLike) -> Path:
    """Save the heads (action_head, proprio_projector, film, keypoint_encoder; whichever exist) as
    ``heads.safetensors``."""
    from safetensors.torch import save_file

    vla = _unwrap(model)
    state = {
        f"{name}.{k}": v.detach().contiguous().cpu()
        for name in HEAD_MODULES
        if getattr(vla, name) is not None
        for k, v in getattr(vla, name).state_dict().items()
    }
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(state, str(directory / HEADS_FILE), metadata={"format": "pt"})  # inside the checkpoint's atomic dir
    return directory / HEADS_FILE


def load_heads(model: Any, directory: str | os.PathLike) -> None:
    """Load ``heads.safetensors`` into the model's heads.

    Raises:
        FileNotFoundError: no heads file. CheckpointError: missing / unexpected / mis-shaped keys (listed).
    """
    from safetensors.torch import load_file

    from policies.openvla.weights import key_report

    path = Path(directory) / HEADS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found")
    vla = _unwrap(model)
    state = load_file(str(path))
    expected = {
        f"{name}.{k}": tuple(v.shape)
        for name in HEAD_MODULES
        if getattr(vla, name) is not None
        for k, v in getattr(vla, name).state_dict().items()
    }
    key_report(str(path), expected, {k: tuple(v.shape) for k, v in state.items()})
    with torch.no_grad():
        for key, value in state.items():
            name, _, rest = key.partition(".")
            getattr(vla, name).get_parameter(rest).copy_(value)
