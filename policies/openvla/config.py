"""Configuration of the OpenVLA-architecture VLA: vision towers, projector, Llama LLM, action head.

Light on purpose (dataclasses only, no torch): the trainer's and the CLI's config dataclasses embed it, and its
field docstrings are their ``--help`` text.

Two presets (:func:`preset`):
    * ``openvla-7b``: the real dimensions of openvla/openvla-7b (DINOv2 ViT-L/14 with 4 registers + SigLIP
      So400m/14 at 224 px, fused GELU-MLP projector, Llama-2-7B with the 32064-token padded vocabulary) plus an
      OFT-style L1 action head (8 x 14 chunk, 14-D proprio token, 2 views).
    * ``tiny``: the same architecture sized to train on 2 CPU cores (128 px / patch 16, two ViTs of width 192 x 4
      blocks of which 3 run, Llama hidden 256 x 4 layers with a 512-wide SwiGLU). Its vocabulary comes from
      :func:`policies.openvla.tokenizer.config_for_tokenizer`. Sized for <= 20 ms per 8 x 14 chunk on 2 CPU cores
      (benchmarks/bench_model.py).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from typing import Any, Literal

from envs.layout import ACTION_LAYOUT, CAMERAS
from policies.normalization import NORM_MODES
from policies.openvla.specs import (  # noqa: F401  (re-exported: VLAConfig's field types)
    DINOV2_VIT_L,
    LLAMA2_7B,
    SIGLIP_SO400M,
    TINY_LLM,
    TINY_SIGLIP,
    TINY_VIT,
    LLMSpec,
    VisionSpec,
    positive,
)

VisionBackboneKind = Literal["dinosiglip", "dinov2", "siglip"]
ProjectorKind = Literal["auto", "fused-gelu-mlp", "gelu-mlp"]
ActionHeadKind = Literal["l1", "tokens", "flow"]
TokenDecoding = Literal["autoregressive", "parallel"]
AttnImplementation = Literal["sdpa", "eager"]


KNOB = "cli_knob"
"""Field-metadata key of the VLAConfig fields ``vla train`` exposes as flags (``--action-head``, ...)."""


@functools.lru_cache(maxsize=32)
def proprio_noise_stds(default: float, dims: tuple[str, ...], proprio_dim: int) -> tuple[float, ...]:
    """Per-dimension proprio noise std (``proprio_dim`` floats): ``default`` with the NAME=STD ``dims`` overrides.
    Cached: the processor asks on every training step with the same arguments.

    Raises:
        ValueError: a malformed item, a NAME not in envs.layout.ACTION_LAYOUT (the known names are listed), a name
            given twice, a std that is not finite and >= 0, or overrides on a proprio that is not 14-D.
    """
    stds = [float(default)] * proprio_dim
    if not dims:
        return tuple(stds)
    if proprio_dim != len(ACTION_LAYOUT):
        raise ValueError(f"VLAConfig.proprio_noise_dims needs the {len(ACTION_LAYOUT)}-D proprio, got {proprio_dim}")
    seen: set[str] = set()
    for item in dims:
        name, sep, value = item.partition("=")
        try:
            std = float(value) if sep else float("nan")
        except ValueError:
            std = float("nan")
        if name not in ACTION_LAYOUT or name in seen or not (std >= 0 and math.isfinite(std)):
            raise ValueError(
                f"VLAConfig.proprio_noise_dims: {item!r} is not NAME=STD with a finite STD >= 0 and a NAME given once "
                f"from {list(ACTION_LAYOUT)}"
            )
        seen.add(name)
        stds[ACTION_LAYOUT.index(name)] = std
    return tuple(stds)


def knob(default: Any) -> Any:
    """A VLAConfig field that ``vla train`` exposes as a flag (its docstring is the help, its check VLAConfig's)."""
    return dataclasses.field(default=default, metadata={KNOB: True})


def knob_names() -> tuple[str, ...]:
    """Names of the VLAConfig fields marked :func:`knob`, in declaration order."""
    return tuple(f.name for f in dataclasses.fields(VLAConfig) if f.metadata.get(KNOB))


@dataclasses.dataclass(frozen=True)
class VLAConfig:
    """Everything that defines the VLA's architecture and its input conventions (saved as ``config.json``)."""

    vision_backbone: VisionBackboneKind = knob("dinosiglip")
    """Vision tower: ``dinosiglip`` (DINOv2 + SigLIP fused on the feature axis, OpenVLA), ``dinov2`` or ``siglip``."""
    dino: VisionSpec = DINOV2_VIT_L
    """DINOv2-with-registers featurizer dimensions (used by dinosiglip and dinov2)."""
    siglip: VisionSpec = SIGLIP_SO400M
    """SigLIP featurizer dimensions (used by dinosiglip and siglip)."""
    image_size: int = knob(224)
    """Square input side (px) of every view after preprocessing."""
    patch_size: int = 14
    """ViT patch side (px); each view gives (image_size / patch_size)^2 tokens."""
    projector: ProjectorKind = "auto"
    """Vision-to-LLM projector: ``fused-gelu-mlp`` (fc1 V->4V, GELU, fc2 4V->D, GELU, fc3 D->D; OpenVLA's for
    dinosiglip), ``gelu-mlp`` (fc1 V->D, GELU, fc2 D->D) or ``auto`` (fused for dinosiglip, else gelu-mlp)."""
    llm: LLMSpec = LLAMA2_7B
    """Llama dimensions and special token ids."""
    action_head: ActionHeadKind = knob("l1")
    """``l1``: OFT L1-regression MLP-ResNet head on parallel-decoded hidden states; ``tokens``: OpenVLA's
    discretized action tokens predicted by the LLM's lm_head; ``flow``: a pi0-style flow-matching action expert
    on the same hidden states (``heads.FlowMatchingActionHead``)."""
    token_decoding: TokenDecoding = knob("autoregressive")
    """For the tokens head: ``autoregressive`` (original OpenVLA: causal, greedy, one token per action value) or
    ``parallel`` (OFT: zeroed placeholder embeddings, bidirectional attention, one forward pass)."""
    n_action_bins: int = knob(256)
    """Uniform bins on [-1, 1] for the tokens head (OpenVLA: 256)."""
    action_token_end_id: int = 32000
    """One past the highest action-token id: bin index d (1-based, ``np.digitize``) is token
    ``action_token_end_id - d``, so the action tokens are the ``n_action_bins`` ids below it (Llama-2: 32000,
    the last 256 ids of the base vocabulary). Set from the tokenizer for other vocabularies."""
    empty_token_id: int | None = 29871
    """Token appended to every prompt as OpenVLA's ``predict_action`` does (Llama-2 ``'▁'`` = 29871); None for
    tokenizers without this quirk."""
    chunk_size: int = 8
    """H, actions per predicted chunk."""
    action_dim: int = 14
    """A, dimensions of one action (14 for the dual-arm layout)."""
    proprio_dim: int = 14
    """P, proprio input size; 0 = no proprio token. Otherwise one projected token follows the patches (OFT)."""
    action_head_hidden: int | None = knob(None)
    """Hidden width of the L1 or flow head's MLP-ResNet (None: the LLM width, as OFT)."""
    action_head_blocks: int = knob(2)
    """Residual blocks in the L1 or flow head (OFT: 2)."""
    flow_steps: int = knob(10)
    """Flow head: Euler integration steps from noise to a chunk at inference (pi0: 10)."""
    use_film: bool = knob(False)
    """FiLM: in each used ViT block, after the attention residual, x = x * (1 + gamma) + beta with gamma, beta
    linear in the mean language embedding (OFT ``FiLMedVisionTransformerBlock``)."""
    keypoints: int = knob(0)
    """K spatial-softmax keypoints per view from a small conv net on the pixels, one extra LLM token per view after
    its patches (``policies.openvla.keypoints``, after Levine, Finn, Darrell and Abbeel 2016); 0 = off, as OpenVLA,
    whose checkpoint format cannot hold them"""
    keypose_aux: float = knob(0.0)
    """Training only: weight of an auxiliary L1 loss in which a readout of the keypoints (needs ``keypoints``)
    predicts each arm's next keypose, the normalized x, y, z of the action row where that arm's gripper next
    closes in the episode (keyframes as in PerAct: Shridhar et al., 2022); it teaches the keypoints to find what
    the arms will grasp. 0 = off; the readout is never used to act"""
    cameras: tuple[str, ...] = ("head", "left_wrist")
    """Camera views in model order (1-4 names from envs.layout.CAMERAS); views concatenate on the token axis."""
    image_aug: bool = knob(True)
    """Train-time augmentation as OFT: random crop of 90 % area (square) resized back + color jitter."""
    center_crop: bool = knob(True)
    """Eval-time center crop of ``crop_scale`` area resized back (use when trained with ``image_aug``)."""
    crop_scale: float = knob(0.9)
    """Area fraction kept by the train random crop and the eval center crop."""
    proprio_noise: float = knob(0.0)
    """Train-time augmentation: std of Gaussian noise added to the normalized proprio input (normalized units:
    1.0 = half the q01..q99 range of each dimension; 0 = off). It keeps the coarse arm state (phase, gripper)
    and hides its fine position, so the policy cannot copy the current pose into the action and must locate
    the object in the image: the "copycat" shortcut of Wen et al. 2020 (Fighting Copycat Agents in Behavioral
    Cloning from Observation Histories), cf. de Haan et al. 2019 (Causal Confusion in Imitation Learning)."""
    proprio_noise_dims: tuple[str, ...] = knob(())
    """Per-dimension overrides of ``proprio_noise`` as NAME=STD with NAME from envs.layout.ACTION_LAYOUT (the
    proprio has the action's layout), for instance left_z=0.1 right_z=0.1 to hide the arms' xy but not their
    height; () = proprio_noise everywhere. Measured on DualArmPickColorCube-v1 (#13, 3000 steps): 0.5 with z at 0.1
    still closed the gripper 4.4 cm above the cube (0.1 everywhere: 1.1 cm) and lifted 2/100 (24/100)."""
    norm_mode: str = "bounds_q99"
    """Action/proprio normalization mode (policies.normalization.NORM_MODES); the model sees normalized values."""
    attn_implementation: AttnImplementation = "sdpa"
    """Attention kernel for every transformer (``sdpa`` or ``eager``)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "cameras", tuple(self.cameras))
        positive(
            "VLAConfig",
            image_size=self.image_size,
            patch_size=self.patch_size,
            chunk_size=self.chunk_size,
            action_dim=self.action_dim,
            crop_scale=self.crop_scale,
        )
        self._check_choices()
        if self.image_size % self.patch_size:
            raise ValueError(
                f"VLAConfig.image_size {self.image_size} is not a multiple of patch_size {self.patch_size}"
            )
        if self.uses_dino and self.dino.mlp_dim % self.dino.width:
            raise ValueError(
                f"VLAConfig.dino.mlp_dim {self.dino.mlp_dim} must be a multiple of width "
                f"{self.dino.width} (transformers' Dinov2 takes an integer mlp_ratio)"
            )
        if not 1 <= len(self.cameras) <= 4:
            raise ValueError(f"VLAConfig.cameras must name 1-4 views, got {self.cameras}")
        unknown = [c for c in self.cameras if c not in CAMERAS]
        if unknown or len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"VLAConfig.cameras {self.cameras}: unknown {unknown} or repeated; known: {CAMERAS}")
        if self.proprio_dim < 0:
            raise ValueError(f"VLAConfig.proprio_dim must be >= 0, got {self.proprio_dim}")
        if self.crop_scale > 1:
            raise ValueError(f"VLAConfig.crop_scale must be in (0, 1], got {self.crop_scale}")
        if not (self.proprio_noise >= 0 and math.isfinite(self.proprio_noise)):
            raise ValueError(f"VLAConfig.proprio_noise must be a finite std >= 0, got {self.proprio_noise}")
        object.__setattr__(self, "proprio_noise_dims", tuple(str(x) for x in self.proprio_noise_dims))
        proprio_noise_stds(self.proprio_noise, self.proprio_noise_dims, self.proprio_dim)  # validates
        if self.keypoints < 0:
            raise ValueError(f"VLAConfig.keypoints must be >= 0, got {self.keypoints}")
        if not (self.keypose_aux >= 0 and math.isfinite(self.keypose_aux)) or (self.keypose_aux and not self.keypoints):
            raise ValueError(
                f"VLAConfig.keypose_aux must be a finite weight >= 0 and needs keypoints > 0, got keypose_aux "
                f"{self.keypose_aux} with keypoints {self.keypoints}"
            )
        if self.flow_steps < 1:
            raise ValueError(f"VLAConfig.flow_steps must be >= 1, got {self.flow_steps}")
        if self.action_head_blocks < 0 or (self.action_head_hidden is not None and self.action_head_hidden <= 0):
            raise ValueError(
                f"VLAConfig.action_head_blocks={self.action_head_blocks} / action_head_hidden="
                f"{self.action_head_hidden} must be >= 0 / > 0"
            )
        self._check_token_ids()
        n_tokens = 1 + self.num_vision_tokens + 64 + self.chunk_size * self.action_dim
        if n_tokens > self.llm.max_position_embeddings:
            raise ValueError(
                f"VLAConfig: sequence of ~{n_tokens} tokens exceeds llm.max_position_embeddings "
                f"{self.llm.max_position_embeddings}"
            )

    def _check_choices(self) -> None:
        choices = {
            "vision_backbone": ("dinosiglip", "dinov2", "siglip"),
            "projector": ("auto", "fused-gelu-mlp", "gelu-mlp"),
            "action_head": ("l1", "tokens", "flow"),
            "token_decoding": ("autoregressive", "parallel"),
            "norm_mode": NORM_MODES,
            "attn_implementation": ("sdpa", "eager"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"VLAConfig.{name} must be one of {list(allowed)}, got {getattr(self, name)!r}")

    def _check_token_ids(self) -> None:
        if self.n_action_bins < 2:
            raise ValueError(f"VLAConfig.n_action_bins must be >= 2, got {self.n_action_bins}")
        if not self.n_action_bins <= self.action_token_end_id <= self.llm.vocab_size:
            raise ValueError(
                f"VLAConfig.action_token_end_id {self.action_token_end_id} must lie in [n_action_bins="
                f"{self.n_action_bins}, llm.vocab_size={self.llm.vocab_size}]"
            )
        if self.empty_token_id is not None and not 0 <= self.empty_token_id < self.llm.vocab_size:
            raise ValueError(
                f"VLAConfig.empty_token_id {self.empty_token_id} outside the vocabulary [0, {self.llm.vocab_size})"
            )

    # ---- derived quantities -------------------------------------------------------------------------------
    @property
    def uses_dino(self) -> bool:
        """True when a DINOv2 featurizer is part of the vision tower."""
        return self.vision_backbone in ("dinosiglip", "dinov2")

    @property
    def featurizers(self) -> tuple[tuple[str, str, VisionSpec], ...]:
        """(module name, kind, spec) per featurizer in channel order: ``featurizer`` then ``fused_featurizer``."""
        if self.vision_backbone == "dinosiglip":
            return (("featurizer", "dinov2", self.dino), ("fused_featurizer", "siglip", self.siglip))
        if self.vision_backbone == "dinov2":
            return (("featurizer", "dinov2", self.dino),)
        return (("featurizer", "siglip", self.siglip),)

    @property
    def vision_dim(self) -> int:
        """Feature width of one patch token after fusion (OpenVLA 7B: 1024 + 1152 = 2176)."""
        return sum(spec.width for _, _, spec in self.featurizers)

    @property
    def channels_per_view(self) -> int:
        """Pixel channels per view: 3 per featurizer (each gets its own normalization), 6 for dinosiglip."""
        return 3 * len(self.featurizers)

    def prompt_token_budget(self) -> int:
        """Most prompt tokens (BOS and the instruction template included) that fit the LLM's positions next to the
        patches of every view, the proprio token, the action slots of a chunk and the stop token."""
        fixed = self.num_vision_tokens + (1 if self.proprio_dim else 0)
        return self.llm.max_position_embeddings - fixed - self.chunk_size * self.action_dim - 1

    @property
    def num_vision_tokens(self) -> int:
        """Image tokens in the LLM input: per view its patches and, with ``keypoints``, one keypoint token."""
        return len(self.cameras) * (self.num_patches_per_view + (1 if self.keypoints else 0))

    @property
    def num_patches_per_view(self) -> int:
        """Patch tokens per view: (image_size / patch_size)^2."""
        return (self.image_size // self.patch_size) ** 2

    @property
    def projector_kind(self) -> str:
        """The projector actually built (``auto`` resolved)."""
        if self.projector != "auto":
            return self.projector
        return "fused-gelu-mlp" if self.vision_backbone == "dinosiglip" else "gelu-mlp"

    @property
    def head_hidden(self) -> int:
        """Hidden width of the L1 head."""
        return self.action_head_hidden or self.llm.hidden_size

    @property
    def n_action_slots(self) -> int:
        """H * A: action slots after the prompt (one hidden state or token per action value)."""
        return self.chunk_size * self.action_dim

    # ---- serialization ------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (nested specs as dicts, tuples as lists); :meth:`from_dict` inverts it exactly."""
        out = dataclasses.asdict(self)
        out["cameras"] = list(self.cameras)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "VLAConfig") -> VLAConfig:
        """Build from :meth:`to_dict` output (or a partial dict: absent fields keep their defaults).

        Raises:
            ValueError: unknown keys (listed, with ``where`` naming the source) or invalid values.
        """
        return _build(cls, data, where)

    def replace(self, **overrides: Any) -> VLAConfig:
        """Copy with fields replaced; nested specs accept a dict of their fields (e.g. ``llm={"num_layers": 2}``)."""
        merged = self.to_dict()
        for key, value in overrides.items():
            if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            elif dataclasses.is_dataclass(value):
                merged[key] = dataclasses.asdict(value)
            else:
                merged[key] = value
        return _build(type(self), merged, "VLAConfig override")


_NESTED = {"dino": VisionSpec, "siglip": VisionSpec, "llm": LLMSpec}


def _build(cls: type, data: Mapping[str, Any], where: str) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}; known: {sorted(names)}")
    kwargs = dict(data)
    for key, sub in _NESTED.items():
        if cls is VLAConfig and isinstance(kwargs.get(key), Mapping):
            kwargs[key] = _build(sub, kwargs[key], f"{where}.{key}")
    if "cameras" in kwargs:
        kwargs["cameras"] = tuple(kwargs["cameras"])
    return cls(**kwargs)


def pad_vocab(n_tokens: int, multiple: int = 64) -> int:
    """Round a tokenizer size up to a multiple (OpenVLA pads 32001 -> 32064 with ``pad_to_multiple_of=64``)."""
    return int(math.ceil(n_tokens / multiple) * multiple)


PRESETS: dict[str, VLAConfig] = {
    "openvla-7b": VLAConfig(),
    "tiny": VLAConfig(
        dino=TINY_VIT,
        siglip=TINY_SIGLIP,
        image_size=128,
        patch_size=16,
        llm=TINY_LLM,
        action_token_end_id=1024,
        empty_token_id=None,
    ),
}


def preset(name: str, **overrides: Any) -> VLAConfig:
    """A named configuration (``tiny`` or ``openvla-7b``) with any field overridden.

    Nested specs take a dict of their own fields: ``preset("tiny", chunk_size=4, llm={"num_layers": 2})``.

    Raises:
        ValueError: unknown preset name (lists the known ones), unknown field or invalid value.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown VLA preset {name!r}; known: {sorted(PRESETS)}")
    return PRESETS[name].replace(**overrides) if overrides else PRESETS[name]
