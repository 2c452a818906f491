"""Model, processor, optimizer and lr schedule of a training run (fresh or resumed).

Fresh, no ``--base``: a byte-level BPE tokenizer is trained on the instructions the run trains on: the
``--instructions`` split (default seen) of every episode of every folder (train and val), or the one
``--constant-instruction``. Unseen phrasings still tokenize (byte-level: no unknown token) but contribute no merges,
so an unseen-instruction benchmark measures generalisation honestly. The preset is sized to the tokenizer
(:func:`policies.openvla.tokenizer.config_for_tokenizer`) and the VLA is initialised randomly with the seed.
Fresh, with ``--base``: ``from_openvla_checkpoint(base)``, then the fine-tune's chunk / cameras / proprio / head
settings are applied by :func:`policies.openvla.adapt.adapt_base_model` (backbone, projector, LLM,
tokenizer and image normalization kept; heads kept when their shapes fit, else new).
Resumed: the architecture and tokenizer come from the checkpoint, then its weights are loaded.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from policies.openvla.adapt import load_base_model
from policies.openvla.config import VLAConfig
from policies.openvla.processor import VLAProcessor
from policies.openvla.run_format import ADAPTER_DIR, load_backbone
from train.stats import PreparedData
from train.train_config import TrainConfig


def base_dtype(cfg: TrainConfig, mixed_precision: str) -> torch.dtype:
    """Storage dtype of the frozen base weights: bfloat16 for LoRA on a --base under bf16 mixed precision (as
    OpenVLA-OFT fine-tunes: 15 GB instead of 30 GB for 7B), else float32. Trainable tensors are always float32."""
    if cfg.finetune.mode == "lora" and cfg.model.base is not None and mixed_precision == "bf16":
        return torch.bfloat16
    return torch.float32


def build_fresh_model(
    cfg: TrainConfig, prepared: PreparedData, dtype: torch.dtype = torch.float32
) -> tuple[Any, VLAProcessor]:
    """(VLA in train mode, processor) of a new run; the VLA's random weights depend only on ``cfg.seed``.

    ``dtype`` applies to a ``--base`` model (see :func:`base_dtype`); a fresh tiny model is float32.

    Raises:
        ValueError: a model override or base incompatible with the settings (named field).
    """
    from policies.openvla.model import VLA

    if cfg.model.base is not None:
        model, processor, _ = load_base_model(cfg.model.base, dtype=dtype, overrides=cfg.model_fields(), seed=cfg.seed)
        if processor.tokenizer is None:
            raise ValueError(f"base: {cfg.model.base} has no tokenizer files (tokenizer.json / tokenizer.model)")
        return model, processor
    from policies.openvla.config import preset
    from policies.openvla.tokenizer import config_for_tokenizer, train_instruction_tokenizer

    sized = preset(cfg.model.preset, **cfg.model_fields())
    dcfg = cfg.data
    instructions = (
        [dcfg.constant_instruction]
        if dcfg.constant_instruction
        else [s for e in prepared.summary.episodes for s in e.instruction_pool(dcfg.instructions)]
    )
    tokenizer = train_instruction_tokenizer(instructions, n_action_bins=sized.n_action_bins)
    config = config_for_tokenizer(sized, tokenizer)
    torch.manual_seed(cfg.seed)
    return VLA(config).train(), VLAProcessor(config, tokenizer)


def build_resumed_model(
    cfg: TrainConfig, ckpt: Path, raw: dict[str, Any], dtype: torch.dtype = torch.float32
) -> tuple[Any, VLAProcessor]:
    """(plain VLA with the checkpoint's full or backbone weights, processor) from a run checkpoint
    (``policies.openvla.run_format.load_backbone``, the loader inference uses too).

    LoRA weights and heads are loaded later by :func:`load_finetune_weights`, after :func:`wrap_for_finetune`.
    """
    config = VLAConfig.from_dict(raw["model"], where=f"{ckpt}/config.json model")
    processor = VLAProcessor.from_pretrained(ckpt)
    model = load_backbone(ckpt, raw, config, dtype=dtype, base=cfg.model.base)
    return model.train(), processor


def check_prompt_lengths(processor: VLAProcessor, config: VLAConfig, prepared: PreparedData) -> None:
    """Refuse instructions whose prompt does not fit the model's context (a 10,000-character instruction would
    otherwise train 4x slower on truncated positions without a word).

    Raises:
        EpisodeDataError: the first episode with a too-long instruction (file, tokens, budget).
    """
    from train.episodes import EpisodeDataError

    budget = config.prompt_token_budget()
    for episode in prepared.summary.episodes:
        for text in dict.fromkeys(episode.instruction_pool("both")):
            ids, _ = processor.tokenize([text])
            if ids.shape[1] > budget:
                raise EpisodeDataError(
                    f"{episode.path}: instruction of {len(text)} characters is {ids.shape[1]} prompt tokens; the "
                    f"model's context ({config.llm.max_position_embeddings} positions) leaves room for {budget} next "
                    f"to the images and the action chunk: shorten it"
                )


def wrap_for_finetune(cfg: TrainConfig, model: Any) -> Any:
    """LoRA (peft) or full fine-tuning; with the l1 and flow heads the unused ``lm_head`` is frozen (no gradient reaches
    it, which DDP would otherwise report as an unused parameter). Trainable tensors are made float32."""
    if cfg.finetune.mode == "lora":
        from policies.openvla.lora import apply_lora

        model = apply_lora(
            model, r=cfg.finetune.lora_rank, alpha=cfg.finetune.lora_alpha, dropout=cfg.finetune.lora_dropout
        )
    elif model.config.action_head in ("l1", "flow"):
        model.language_model.lm_head.requires_grad_(False)
    for param in model.parameters():  # master weights of everything trained stay float32 (bf16 autocast computes)
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
    return model


def load_finetune_weights(model: Any, ckpt: Path, finetune: str) -> None:
    """Load a LoRA checkpoint's adapter and heads into the wrapped model (full checkpoints: nothing to do)."""
    if finetune != "lora":
        return
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    from policies.openvla.lora import load_heads

    state = load_file(str(ckpt / ADAPTER_DIR / "adapter_model.safetensors"))
    result = set_peft_model_state_dict(model, state)
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected:
        raise ValueError(f"{ckpt / ADAPTER_DIR}: adapter tensors that do not fit the model: {unexpected[:10]}")
    load_heads(model, ckpt)


def lr_lambda(
    schedule: str, steps: int, warmup: int, milestones: tuple[int, ...], gamma: float
) -> Callable[[int], float]:
    """Multiplier of the peak lr for optimizer step k (0-based; ``LambdaLR.last_epoch`` = steps done).

    Warmup: (k + 1) / warmup for k < warmup. Then multistep: gamma ** #(milestones <= k); cosine:
    0.5 (1 + cos(pi (k - warmup) / (steps - warmup))); constant: 1.
    """

    def f(k: int) -> float:
        if k < warmup:
            return (k + 1) / warmup
        if schedule == "multistep":
            return gamma ** sum(1 for m in milestones if k >= m)
        if schedule == "cosine":
            progress = min(1.0, (k - warmup) / max(1, steps - warmup))
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0

    return f


def make_optimizer(cfg: TrainConfig, model: Any, milestones: tuple[int, ...]):
    """(AdamW over the trainable parameters in module order, LambdaLR, that parameter list).

    AdamW runs torch's fused kernel (the same update rule in one kernel per step: 11 vs 48 ms for the tiny model's
    9.7 M parameters on 2 CPU cores, benchmarks/results/precision.json) where the parameters allow it. With
    ``--lr-scale MODULE=FACTOR`` each named submodule's parameters form their own group at lr * FACTOR (the same
    schedule multiplies every group).

    Raises:
        ValueError: no trainable parameters, or an ``lr_scale`` module that holds none of them.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("the model has no trainable parameters")
    params = [p for _, p in named]
    fused = all(p.dtype == torch.float32 and p.device.type in ("cpu", "cuda") for p in params)
    groups = param_groups(named, cfg.optim.lr, cfg.optim.lr_scales)
    optimizer = torch.optim.AdamW(groups, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay, fused=fused)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lr_lambda(cfg.optim.lr_schedule, cfg.optim.steps, cfg.optim.warmup_steps, milestones, cfg.optim.lr_gamma),
    )
    return optimizer, scheduler, params


def param_groups(named: list[tuple[str, Any]], lr: float, scales: dict[str, float]) -> list[dict[str, Any]]:
    """AdamW parameter groups: the unscaled parameters at ``lr`` first (the lr that train/lr logs), then one group
    per ``scales`` module at lr * factor.

    A module path matches a parameter name directly or after peft's ``base_model.model.`` prefix
    (``keypoint_encoder`` matches ``keypoint_encoder.conv.0.weight``); the first listed match wins. Each group keeps
    module order.

    Raises:
        ValueError: a ``scales`` module holding no trainable parameter (the error lists the trainable modules).
    """

    paths = [(name.removeprefix("base_model.model."), param) for name, param in named]  # peft's wrapper prefix

    def owner(path: str) -> str | None:
        return next((m for m in scales if path == m or path.startswith(m + ".")), None)

    buckets: dict[str | None, list[Any]] = {m: [] for m in scales}
    buckets[None] = []
    for path, param in paths:
        buckets[owner(path)].append(param)
    empty = [m for m in scales if not buckets[m]]
    if empty:
        tops = sorted({path.split(".")[0] for path, _ in paths})
        raise ValueError(f"lr_scale: module(s) {empty} hold no trainable parameters; trainable modules: {tops}")
    groups = [{"params": buckets[None], "lr": lr, "name": "rest"}] if buckets[None] else []
    return groups + [{"params": buckets[m], "lr": lr * f, "name": m} for m, f in scales.items()]
