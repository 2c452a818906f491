"""Base-model adaptation: an OpenVLA-format base checkpoint given a fine-tune's config (``vla train --base``).

Only :data:`ADAPTABLE_FIELDS` may differ from the base: they touch the heads, the number of views or the
preprocessing. Heads whose parameter shapes still fit keep their weights; others are initialised anew.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch

from policies.normalization import NormStats
from policies.openvla.config import VLAConfig
from policies.openvla.model import VLA
from policies.openvla.processor import VLAProcessor

ADAPTABLE_FIELDS = (
    "chunk_size",
    "cameras",
    "proprio_dim",
    "norm_mode",
    "action_head",
    "token_decoding",
    "use_film",
    "keypoints",
    "keypose_aux",
    "action_head_hidden",
    "action_head_blocks",
    "image_aug",
    "center_crop",
    "crop_scale",
    "proprio_noise",
    "proprio_noise_dims",
)
"""VLAConfig fields a fine-tune may change relative to its base checkpoint (they only touch the heads, the
number of views, or preprocessing); every other field must match the base weights."""


def _new_heads(model: VLA, config: VLAConfig) -> dict[str, torch.nn.Module | None]:
    from policies.openvla.heads import FiLM, ProprioProjector, make_action_head
    from policies.openvla.keypoints import make_keypoint_encoder

    d = config.llm.hidden_size
    film = None
    if config.use_film:
        film = FiLM(
            d,
            {name: (spec.width, model.vision_backbone.featurizer_blocks(name)) for name, _, spec in config.featurizers},
        )
    return {
        "proprio_projector": ProprioProjector(config.proprio_dim, d) if config.proprio_dim > 0 else None,
        "action_head": make_action_head(config),
        "film": film,
        "keypoint_encoder": make_keypoint_encoder(config),
    }


def adapt_base_model(model: VLA, config: VLAConfig, seed: int = 0) -> tuple[VLA, list[str]]:
    """Give a base VLA (e.g. from ``from_openvla_checkpoint``) the fine-tune's config, in place.

    Only :data:`ADAPTABLE_FIELDS` may differ. Heads (action head, proprio projector, FiLM, keypoints) are rebuilt
    for the new config; one whose parameter shapes still fit keeps its weights (OFT's L1 head is applied per chunk
    step, so its weights do not depend on chunk_size), others are initialised under ``torch.manual_seed(seed)``
    (the global RNG is left untouched).

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
        raise ValueError(
            f"the fine-tune config differs from the base checkpoint in fields that fix its weights: {detail}"
        )
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


def load_base_model(
    base_dir: str | os.PathLike,
    config: VLAConfig | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    overrides: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> tuple[VLA, VLAProcessor, dict[str, NormStats]]:
    """An OpenVLA-format base adapted to ``config`` (see :func:`adapt_base_model`) and a processor for it.

    Args:
        config: the target config; None = the base's own config with ``overrides`` (VLAConfig.replace) applied.
        seed: seed of heads that have to be initialised anew.

    Returns:
        (model in train mode, processor with the base's tokenizer and image normalization and ``config``'s
        cameras / crop flags, the base's {unnorm_key: NormStats}).
    """
    from policies.openvla.openvla_format import from_openvla_checkpoint

    model, processor, stats = from_openvla_checkpoint(base_dir, dtype=dtype, device=device)
    if config is None:
        config = model.config.replace(**dict(overrides or {}))
    model, _ = adapt_base_model(model, config, seed=seed)
    image_norm = [dict(n) for n in processor.settings.image_norm]
    return model.train(), VLAProcessor(config, processor.tokenizer, image_norm=image_norm), stats
