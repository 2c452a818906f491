"""Images + instructions -> model inputs (pixel_values, input_ids, attention_mask).

Images (OpenVLA ``PrismaticImageProcessor`` "resize-naive" + OFT's augmentation, prismatic/vla/datasets/rlds):
    1. resize every view to ``image_size`` (bicubic, antialiased, rounded to uint8 levels as PIL does; skipped
       when the size already matches, as torchvision's resize of an equal-size PIL image is the identity);
    2. train: random square crop of ``crop_scale`` area resized back + color jitter (brightness +-0.2, contrast
       and saturation x[0.8, 1.2], hue +-0.05), OFT's ``image_aug``; eval: center crop of the same area resized
       back when ``center_crop`` (OFT ``center_crop=True`` for policies trained with image_aug);
    3. per featurizer ``(x - mean) / std`` (DINOv2: ImageNet constants, SigLIP: 0.5 / 0.5), channels stacked
       per view [DINOv2 RGB, SigLIP RGB], views concatenated on channels -> (B, V * 6, S, S).
Text: ``"In: What action should the robot take to {instruction.lower()}?\\nOut:"`` tokenized with BOS, the
config's ``empty_token_id`` appended (Llama-2: 29871, as ``predict_action``), right-padded.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from policies.openvla.config import VLAConfig, proprio_noise_stds

PROMPT_TEMPLATE = "In: What action should the robot take to {instruction}?\nOut:"
IMAGENET_NORM = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
SIGLIP_NORM = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
PROCESSOR_FILE = "vla_processor.json"


@dataclasses.dataclass(frozen=True)
class ProcessorSettings:
    """What the processor needs from a VLAConfig (saved as ``vla_processor.json``)."""

    image_size: int
    cameras: tuple[str, ...]
    image_norm: tuple[dict, ...]
    """Per featurizer {"mean": (3,), "std": (3,)}, in channel order."""
    image_aug: bool
    center_crop: bool
    crop_scale: float
    empty_token_id: int | None
    pad_token_id: int
    prompt_template: str = PROMPT_TEMPLATE
    proprio_noise: float = 0.0
    """Train-time Gaussian noise std on the normalized proprio (VLAConfig.proprio_noise; absent in older files)."""
    proprio_noise_dims: tuple[str, ...] = ()
    """Per-dimension NAME=STD overrides of proprio_noise (VLAConfig.proprio_noise_dims; absent in older files)."""


class VLAProcessor:
    """Turns (B, V, H, W, 3) uint8 images and B instructions into VLA inputs.

    Args:
        config: the model config (image size, cameras, featurizers, augmentation flags, token ids).
        tokenizer: a transformers tokenizer adding BOS; None allows image preprocessing only.
        image_norm: per-featurizer mean/std override (e.g. ``tvf_normalize_params`` of an OpenVLA checkpoint).
    """

    def __init__(
        self,
        config: VLAConfig | None,
        tokenizer: Any = None,
        image_norm: list[dict] | None = None,
        *,
        settings: ProcessorSettings | None = None,
    ) -> None:
        if settings is None:
            if config is None:
                raise ValueError("VLAProcessor needs a config (or settings)")
            defaults = [IMAGENET_NORM if kind == "dinov2" else SIGLIP_NORM for _, kind, _ in config.featurizers]
            norm = image_norm if image_norm is not None else defaults
            if len(norm) != len(defaults):
                raise ValueError(f"image_norm has {len(norm)} entries for {len(defaults)} featurizers")
            settings = ProcessorSettings(
                image_size=config.image_size,
                cameras=config.cameras,
                image_norm=tuple(
                    {"mean": tuple(map(float, n["mean"])), "std": tuple(map(float, n["std"]))} for n in norm
                ),
                image_aug=config.image_aug,
                center_crop=config.center_crop,
                crop_scale=config.crop_scale,
                empty_token_id=config.empty_token_id,
                pad_token_id=config.llm.pad_token_id,
                proprio_noise=config.proprio_noise,
                proprio_noise_dims=config.proprio_noise_dims,
            )
        self.settings = settings
        self.tokenizer = tokenizer

    # ---- images ---------------------------------------------------------------------------------------------
    def preprocess_images(self, images: Any, train: bool, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, V, H, W, 3) uint8 (numpy or torch) -> (B, V * 3 * n_featurizers, S, S) float32.

        Raises:
            ValueError: wrong rank / channel count / dtype, or V != len(cameras).
        """
        x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
        v = len(self.settings.cameras)
        if x.ndim != 5 or x.shape[-1] != 3 or x.shape[1] != v:
            raise ValueError(
                f"images must be (B, {v}, H, W, 3) for cameras {self.settings.cameras}, got {tuple(x.shape)}"
            )
        if x.dtype != torch.uint8:
            raise ValueError(f"images must be uint8 RGB, got {x.dtype}")
        b, _, h, w, _ = x.shape
        s = self.settings.image_size
        x = x.reshape(b * v, h, w, 3).permute(0, 3, 1, 2).float()  # (B*V, 3, H, W) in [0, 255]
        if (h, w) != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bicubic", antialias=True, align_corners=False)
            x = x.round().clamp(0, 255)  # PIL returns uint8 images
        x = x / 255.0
        if train and self.settings.image_aug:
            x = _augment(x, self.settings.crop_scale, generator)
        elif not train and self.settings.center_crop:
            x = _center_crop(x, self.settings.crop_scale)
        parts = []
        for norm in self.settings.image_norm:
            mean = torch.tensor(norm["mean"], dtype=torch.float32).view(1, 3, 1, 1)
            std = torch.tensor(norm["std"], dtype=torch.float32).view(1, 3, 1, 1)
            parts.append((x - mean) / std)
        out = torch.cat(parts, dim=1)  # (B*V, 3F, S, S)
        return out.reshape(b, v * out.shape[1], s, s)

    def augment_proprio(self, proprio: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Training only: (B, P) normalized proprio + N(0, std_p^2) per element, std_p = proprio_noise or its
        ``proprio_noise_dims`` override (a new tensor; the input is returned unchanged when every std is 0). Draws
        from ``generator`` (after the image augmentation)."""
        stds = proprio_noise_stds(self.settings.proprio_noise, self.settings.proprio_noise_dims, proprio.shape[-1])
        if not any(stds):
            return proprio
        noise = torch.randn(proprio.shape, generator=generator, dtype=torch.float32)
        return proprio + (torch.tensor(stds, dtype=torch.float32) * noise).to(proprio.dtype)

    # ---- text -----------------------------------------------------------------------------------------------
    def prompt(self, instruction: str) -> str:
        """The OpenVLA prompt for one instruction (lower-cased as OFT's ``get_vla_action`` does)."""
        return self.settings.prompt_template.format(instruction=instruction.lower())

    def tokenize(self, instructions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts -> (input_ids, attention_mask), (B, T) int64, BOS first, right-padded.

        Raises:
            ValueError: no tokenizer, or the tokenizer does not add BOS.
        """
        if self.tokenizer is None:
            raise ValueError("this VLAProcessor has no tokenizer (none was found in the checkpoint directory)")
        if isinstance(instructions, str):
            raise ValueError("instructions must be a list of strings, got a single string")
        rows = self.tokenizer([self.prompt(s) for s in instructions], add_special_tokens=True)["input_ids"]
        bos = self.tokenizer.bos_token_id
        if any(not r or r[0] != bos for r in rows):
            raise ValueError(f"tokenizer must add BOS (id {bos}) at the start of each prompt")
        if self.settings.empty_token_id is not None:
            rows = [list(r) + [self.settings.empty_token_id] for r in rows]
        t = max(len(r) for r in rows)
        ids = torch.full((len(rows), t), self.settings.pad_token_id, dtype=torch.int64)
        mask = torch.zeros((len(rows), t), dtype=torch.int64)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.int64)
            mask[i, : len(r)] = 1
        return ids, mask

    def __call__(
        self, images: Any, instructions: list[str], train: bool, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """Returns ``pixel_values`` (B, V*C, S, S) float32, ``input_ids`` / ``attention_mask`` (B, T) int64."""
        pixel_values = self.preprocess_images(images, train=train, generator=generator)
        input_ids, attention_mask = self.tokenize(list(instructions))
        if input_ids.shape[0] != pixel_values.shape[0]:
            raise ValueError(f"{pixel_values.shape[0]} image sets but {input_ids.shape[0]} instructions")
        return {"pixel_values": pixel_values, "input_ids": input_ids, "attention_mask": attention_mask}

    # ---- persistence ----------------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write ``vla_processor.json`` and the tokenizer files into ``directory`` (created if needed)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        data = dataclasses.asdict(self.settings)
        (directory / PROCESSOR_FILE).write_text(json.dumps(data, indent=2))
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(directory)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> VLAProcessor:
        """Load what :meth:`save_pretrained` wrote (the tokenizer when its files are present).

        Raises:
            FileNotFoundError: no ``vla_processor.json`` in ``directory``.
        """
        directory = Path(directory)
        path = directory / PROCESSOR_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found (not a VLA checkpoint directory?)")
        data = json.loads(path.read_text())
        data["cameras"] = tuple(data["cameras"])
        data["proprio_noise_dims"] = tuple(data.get("proprio_noise_dims", ()))
        data["image_norm"] = tuple({"mean": tuple(n["mean"]), "std": tuple(n["std"])} for n in data["image_norm"])
        return cls(None, load_tokenizer(directory), settings=ProcessorSettings(**data))


def load_tokenizer(directory: Path) -> Any:
    """The tokenizer saved in ``directory`` (tokenizer.json or tokenizer.model), or None when there is none.

    The class comes from ``tokenizer_config.json`` (``tokenizer_class``, e.g. LlamaTokenizer for OpenVLA); the
    directory's config.json is not consulted, so an OpenVLA ``auto_map`` never triggers remote code.
    """
    if not ((directory / "tokenizer.json").is_file() or (directory / "tokenizer.model").is_file()):
        return None
    from transformers import PreTrainedTokenizerFast
    from transformers.models.auto.tokenization_auto import tokenizer_class_from_name

    name = None
    config_path = directory / "tokenizer_config.json"
    if config_path.is_file():
        name = json.loads(config_path.read_text()).get("tokenizer_class")
    cls = (tokenizer_class_from_name(name) if name else None) or PreTrainedTokenizerFast
    return cls.from_pretrained(str(directory))


def _rand(generator: torch.Generator | None, n: int, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=generator)


def _center_crop(x: torch.Tensor, crop_scale: float) -> torch.Tensor:
    """Central square of ``crop_scale`` area, resized back (OFT ``center_crop``; bilinear like TF crop_and_resize)."""
    s = x.shape[-1]
    c = max(1, int(round(math.sqrt(crop_scale) * s)))
    o = (s - c) // 2
    return F.interpolate(x[..., o : o + c, o : o + c], size=(s, s), mode="bilinear", align_corners=False)


def _augment(x: torch.Tensor, crop_scale: float, generator: torch.Generator | None) -> torch.Tensor:
    """OFT/OpenVLA training augmentation on (N, 3, S, S) in [0, 1], independently per image."""
    n, _, s, _ = x.shape
    c = max(1, int(round(math.sqrt(crop_scale) * s)))
    ys = torch.randint(0, s - c + 1, (n,), generator=generator).tolist()
    xs = torch.randint(0, s - c + 1, (n,), generator=generator).tolist()
    x = torch.cat(
        [
            F.interpolate(x[i : i + 1, :, y : y + c, z : z + c], size=(s, s), mode="bilinear", align_corners=False)
            for i, (y, z) in enumerate(zip(ys, xs))
        ]
    )
    view = (n, 1, 1, 1)
    x = x + _rand(generator, n, -0.2, 0.2).view(view)  # brightness (additive, TF random_brightness)
    mean = x.mean(dim=(2, 3), keepdim=True)
    x = (x - mean) * _rand(generator, n, 0.8, 1.2).view(view) + mean  # contrast
    gray = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
    x = (x - gray) * _rand(generator, n, 0.8, 1.2).view(view) + gray  # saturation
    x = _shift_hue(x.clamp(0, 1), _rand(generator, n, -0.05, 0.05))
    return x.clamp(0, 1)


def _shift_hue(rgb: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Rotate hue by ``delta`` (fraction of a turn) per image: RGB -> HSV -> RGB on (N, 3, S, S) in [0, 1]."""
    r, g, b = rgb.unbind(1)
    maxc, _ = rgb.max(1)
    minc, _ = rgb.min(1)
    v, span = maxc, maxc - minc
    s = torch.where(maxc > 0, span / maxc.clamp(min=1e-12), torch.zeros_like(maxc))
    safe = torch.where(span > 0, span, torch.ones_like(span))
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(span > 0, (h / 6.0) % 1.0, torch.zeros_like(h))
    h = (h + delta.view(-1, 1, 1)) % 1.0
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    i = i.to(torch.int64) % 6
    choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    out = torch.zeros_like(rgb)
    for k, (cr, cg, cb) in enumerate(choices):
        sel = (i == k).unsqueeze(1)
        out = torch.where(sel, torch.stack([cr, cg, cb], dim=1), out)
    return out
