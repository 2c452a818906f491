"""Config of ``vla train`` (:class:`TrainConfig`) and ``vla merge-lora`` (:class:`MergeLoraConfig`).

Light on purpose: no torch import, so ``vla --help`` stays fast. Field docstrings are the ``--help`` text.

A YAML file can hold any TrainConfig fields (``--config run.yaml``; keys are the field names, ``-`` or ``_``)::

    data: data/LiftBar
    out: runs/liftbar-tiny
    preset: tiny
    steps: 20000
    cameras: [head, left_wrist]
    model_overrides: {llm: {num_layers: 2}}     # YAML only: VLAConfig.replace(...) after the preset

Flags given explicitly on the command line override the file: :func:`parse_train_args` loads the file into a
TrainConfig instance and hands it to ``tyro.cli(TrainConfig, default=...)`` (tyro's documented pattern for
config files), so every flag the user typed wins and every other field comes from the file, then from the
defaults below.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import tyro

from train.config import ActionKey, DataConfig, InstructionSplit, NormMode

Preset = Literal["tiny", "openvla-7b"]
Finetune = Literal["lora", "full"]
LrSchedule = Literal["multistep", "cosine", "constant"]
MixedPrecision = Literal["no", "bf16", "auto"]
Device = Literal["auto", "cpu", "cuda"]
MIN_GLOBAL_BATCH = 16
"""Global batches below this collapse to replaying one trajectory (RoboTwin's OpenVLA-OFT port warns so)."""

RESUME_FREE_FIELDS = frozenset({
    "out", "steps", "log_every", "save_every", "keep_last", "val_every", "val_batches", "eval_every",
    "eval_benchmark", "resume", "config", "wandb", "wandb_project", "num_workers", "threads", "progress",
})
"""Fields that may differ between a run and its ``--resume``: everything else changes the run and is refused.
``steps`` may grow; the lr schedule follows the new ``steps`` (a warning says when that changes the lr of steps
already done, e.g. default multistep milestones or cosine, so the result differs from an uninterrupted run)."""


@dataclasses.dataclass
class TrainConfig:
    """Fine-tune a VLA on an episode folder and write RUN/checkpoints/step_{N}/ (RUN/checkpoints/last -> newest).

    Runs on one device or under `accelerate launch` (DDP). The model sees normalized actions/proprio; the
    statistics go to RUN/dataset_statistics.json and into every checkpoint.
    """

    data: Path
    """Folder of episode_{i}.hdf5 files (from `vla demos` or a RoboTwin-style export)."""
    out: Path
    """Run folder: checkpoints/, tensorboard/, metrics.jsonl, dataset_statistics.json."""
    preset: Preset = "tiny"
    """Architecture preset: tiny (trains on a CPU) or openvla-7b. Ignored with --base (its config.json rules)."""
    base: Path | None = None
    """OpenVLA-format checkpoint folder to start from (config.json + safetensors + tokenizer). Kept from it: the
    vision towers, projector, LLM (with lm_head), tokenizer and image normalization; the action head / proprio
    projector / FiLM are kept when their shapes fit the new chunk/proprio settings, else freshly initialised."""
    config: Path | None = None
    """YAML file of TrainConfig fields; flags given explicitly on the command line override it (read by `vla train`,
    parse_train_args and TrainConfig.from_yaml; recorded in config.json)."""

    # ---- data (-> train.config.DataConfig) ------------------------------------------------------------------
    cameras: tuple[str, ...] = ("head", "left_wrist")
    """1-4 cameras (head,left_wrist,right_wrist,low); their order is the model's view order."""
    chunk_size: int = 8
    """Actions per predicted chunk (H)."""
    action_key: ActionKey = "action"
    """Action dataset to learn: action (absolute targets) or relative_action."""
    use_proprio: bool = False
    """Feed the 14-D proprio of step t to the model through a proprio token (OFT)."""
    proprio_noise: float = 0.0
    """With use_proprio: std of the Gaussian noise added to the normalized proprio while training (VLAConfig
    .proprio_noise; 0.5 = a quarter of each dimension's q01..q99 range). Stops the policy copying its current pose
    into the action (benchmarks/probe_proprio.py measures that); the demo recipe uses 0.5."""
    instructions: InstructionSplit = "seen"
    """Instruction pool sampled per training sample: seen, unseen or both."""
    pad_end: bool = False
    """Also train on the last chunk_size-1 steps of each episode (chunk padded with the last action, masked)."""
    norm_mode: NormMode = "bounds_q99"
    """Action/proprio normalization: bounds_q99, bounds or normal."""
    normalize_grippers: bool = False
    """Also normalize the two gripper dims (already in [-1, 1]; off as in OpenVLA-OFT)."""
    unnorm_key: str | None = None
    """Key of the statistics in dataset_statistics.json (default: the episodes' task, else the folder name)."""
    val_fraction: float = 0.0
    """Fraction of EPISODES held out for validation (whole episodes, chosen with --seed); 0 = none."""
    val_episodes: tuple[int, ...] = ()
    """Explicit episode indices held out for validation (excludes --val-fraction)."""

    # ---- model ----------------------------------------------------------------------------------------------
    action_head: Literal["l1", "tokens"] = "l1"
    """l1: OFT L1-regression head (parallel decoding); tokens: OpenVLA discrete action tokens."""
    token_decoding: Literal["autoregressive", "parallel"] = "autoregressive"
    """Decoding of the tokens head: autoregressive (OpenVLA) or parallel (OFT)."""
    image_size: int | None = None
    """Model input side in px (default: the preset's; tiny 128, openvla-7b 224). Not changeable with --base."""
    use_film: bool = False
    """FiLM language conditioning of the ViT blocks (OFT)."""
    model_overrides: Annotated[dict[str, Any], tyro.conf.Suppress] = dataclasses.field(default_factory=dict)
    """(YAML / Python only) VLAConfig fields applied after the preset, e.g. {llm: {num_layers: 2}}."""
    finetune: Finetune | None = None
    """lora (peft adapters on the LLM + projector, heads fully trained) or full (every weight). Default: lora with
    --base; full without it, since the tiny preset's base weights are random and there is nothing to keep."""
    lora_rank: int = 32
    """LoRA rank r (OpenVLA-OFT: 32)."""
    lora_alpha: int = 16
    """LoRA alpha; scale = alpha / r (OpenVLA-OFT: min(r, 16))."""
    lora_dropout: float = 0.0
    """LoRA dropout (OpenVLA-OFT: 0)."""
    torch_compile: bool = False
    """torch.compile the vision towers and the Llama decoder."""

    # ---- optimisation ---------------------------------------------------------------------------------------
    steps: int = 5000
    """Optimizer steps to train for (a resumed run may raise it)."""
    batch_size: int = 16
    """Samples per device per micro-batch. Global batch = batch_size x grad_accum x processes (warned below 16)."""
    grad_accum: int = 1
    """Micro-batches accumulated per optimizer step."""
    lr: float = 5e-4
    """Peak learning rate of AdamW (OpenVLA-OFT: 5e-4)."""
    lr_schedule: LrSchedule = "multistep"
    """multistep (x lr_gamma at each milestone, as the seeds: 5e-4 -> 5e-5 at 40k of 50k), cosine (to 0 after
    warmup) or constant (after warmup)."""
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
    mixed_precision: MixedPrecision = "auto"
    """no (float32), bf16 (autocast) or auto: bf16 on a CUDA device that supports it and on a CPU where a measured
    probe (`vla doctor` shows it) finds bf16 matmul faster than float32, else no."""
    seed: int = 0
    """Seed of the model init, episode split, sample order, instruction choice and augmentation."""
    device: Device = "auto"
    """auto (CUDA when available), cpu or cuda."""
    threads: int | None = None
    """torch CPU threads per process (default: torch's choice)."""
    num_workers: int = 2
    """DataLoader worker processes per device (0 = read in the main process). Workers only read uint8 frames."""

    # ---- cadence --------------------------------------------------------------------------------------------
    log_every: int = 10
    """Log train metrics every N steps (TensorBoard in RUN/tensorboard, metrics.jsonl, wandb)."""
    save_every: int = 1000
    """Write a checkpoint every N steps (and always at the last step)."""
    keep_last: int | None = None
    """Keep only the newest N checkpoints (None keeps all)."""
    val_every: int = 500
    """Validation L1 on the held-out episodes every N steps (and at the last step); needs a val split."""
    val_batches: int = 8
    """Batches per validation pass (the same fixed batches every time)."""
    eval_every: int = 0
    """Call the in-loop evaluation hook (simulator rollouts) every N steps; 0 = never."""
    eval_benchmark: str | None = None
    """Named benchmark the in-loop evaluation hook runs (used by the CLI layer that injects the hook)."""
    resume: bool = False
    """Continue RUN exactly from RUN/checkpoints/last (model, optimizer, scheduler, RNG, data order)."""
    wandb: bool = False
    """Also log to Weights & Biases (offline unless WANDB_MODE says otherwise; needs `pip install wandb`)."""
    wandb_project: str = "vla-harness"
    """wandb project name."""
    progress: bool = True
    """Show a progress bar (tqdm) with ETA and loss."""

    def __post_init__(self) -> None:
        self.data, self.out = Path(self.data), Path(self.out)
        self.base = Path(self.base) if self.base is not None else None
        self.config = Path(self.config) if self.config is not None else None
        self.val_episodes = tuple(int(i) for i in self.val_episodes)
        self.data_config()  # validates cameras, chunk_size, action_key, instructions, norm_mode, split fields
        self.cameras = self.data_config().cameras
        if not isinstance(self.model_overrides, Mapping):
            raise ValueError(f"model_overrides must be a mapping of VLAConfig fields, got {self.model_overrides!r}")
        self.model_overrides = dict(self.model_overrides)
        self._check_model_overrides()
        if self.finetune is None:
            self.finetune = "lora" if self.base is not None else "full"
        if self.finetune not in ("lora", "full"):
            raise ValueError(f"finetune must be 'lora' or 'full', got {self.finetune!r}")
        if self.base is not None and not (self.base / "config.json").is_file():
            raise ValueError(f"base: {self.base} is not an OpenVLA-format checkpoint folder (no config.json there)")
        if self.base is not None and self.image_size is not None:
            raise ValueError(f"image_size={self.image_size}: the input size of a --base checkpoint is fixed by its "
                             "position embeddings; drop --image-size")
        self._check_numbers()
        if self.lr_milestones is not None:
            self.lr_milestones = tuple(int(m) for m in self.lr_milestones)
            if list(self.lr_milestones) != sorted(set(self.lr_milestones)) or any(m < 1 for m in self.lr_milestones):
                raise ValueError(f"lr_milestones must be strictly increasing steps >= 1, got {self.lr_milestones}")
        if self.wandb and importlib.util.find_spec("wandb") is None:
            raise ValueError("wandb=True but the wandb package is not installed (pip install wandb, or drop --wandb)")

    def _check_model_overrides(self) -> None:
        """Unknown VLAConfig field names fail here, not minutes later when the model is built; without --base the
        values are checked too (the preset with the overrides applied must be a valid VLAConfig)."""
        from policies.openvla.config import VLAConfig, preset

        known = {f.name for f in dataclasses.fields(VLAConfig)}
        unknown = sorted(set(self.model_overrides) - known)
        if unknown:
            close = {u: difflib.get_close_matches(u, known, n=1) for u in unknown}
            hints = ", ".join(f"{u} (did you mean {c[0]}?)" if c else u for u, c in close.items())
            raise ValueError(f"model_overrides: unknown VLAConfig field(s) {hints}")
        if self.proprio_noise and not self.use_proprio:
            raise ValueError(f"proprio_noise={self.proprio_noise} needs use_proprio (the model gets no proprio)")
        if self.base is None:
            preset(self.preset, **{"proprio_noise": self.proprio_noise, **self.model_overrides})

    def _check_numbers(self) -> None:
        positive = {"steps": self.steps, "batch_size": self.batch_size, "grad_accum": self.grad_accum,
                    "lora_rank": self.lora_rank, "log_every": self.log_every, "save_every": self.save_every,
                    "val_every": self.val_every, "val_batches": self.val_batches}
        for name, value in positive.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        nonneg = {"warmup_steps": self.warmup_steps, "eval_every": self.eval_every, "num_workers": self.num_workers,
                  "seed": self.seed}
        for name, value in nonneg.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        if self.keep_last is not None and self.keep_last < 1:
            raise ValueError(f"keep_last must be >= 1 or None, got {self.keep_last}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {self.threads}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.proprio_noise < float("inf"):
            raise ValueError(f"proprio_noise must be a finite std >= 0, got {self.proprio_noise}")
        if not 0 < self.lr_gamma <= 1:
            raise ValueError(f"lr_gamma must be in (0, 1], got {self.lr_gamma}")
        if self.lora_alpha <= 0 or not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_alpha must be > 0 and lora_dropout in [0, 1), got {self.lora_alpha}, "
                             f"{self.lora_dropout}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0 or None, got {self.max_grad_norm}")
        if self.warmup_steps >= self.steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be < steps ({self.steps})")
        if self.image_size is not None and self.image_size < 1:
            raise ValueError(f"image_size must be >= 1 or None, got {self.image_size}")

    # ---- derived --------------------------------------------------------------------------------------------
    def data_config(self) -> DataConfig:
        """The :class:`train.config.DataConfig` of this run (raises ValueError naming a bad data field)."""
        return DataConfig(
            data_dir=self.data, cameras=self.cameras, chunk_size=self.chunk_size, action_key=self.action_key,
            use_proprio=self.use_proprio, instructions=self.instructions, pad_end=self.pad_end,
            norm_mode=self.norm_mode, normalize_grippers=self.normalize_grippers, unnorm_key=self.unnorm_key,
            val_fraction=self.val_fraction, val_episodes=self.val_episodes, seed=self.seed,
        )

    def milestones(self) -> tuple[int, ...]:
        """Multistep milestones: ``lr_milestones`` or 80 % of ``steps`` (the seeds decay at 40k of 50k)."""
        if self.lr_milestones is not None:
            return tuple(self.lr_milestones)
        return (max(1, int(round(0.8 * self.steps))),)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of the fields as given (paths as strings, tuples as lists; lr_milestones unresolved)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> "TrainConfig":
        """Build from a YAML file of fields, then ``overrides`` (Python values).

        Raises:
            FileNotFoundError: no file. ValueError: not a mapping, an unknown key (with the closest field), a
                missing required field (data / out) or an invalid value.
        """
        values = {**load_yaml_fields(path), "config": Path(path), **overrides}
        missing = [name for name in ("data", "out") if name not in values]
        if missing:
            raise ValueError(f"{path}: missing required field(s) {missing} (give them in the file or as arguments)")
        return cls(**values)


_TUPLE_FIELDS = frozenset({"cameras", "val_episodes", "lr_milestones"})


def load_yaml_fields(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping of TrainConfig fields (``-`` in keys read as ``_``); values are not validated here.

    Raises:
        FileNotFoundError: no file. ValueError: invalid YAML, not a mapping, or an unknown key.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config: {path} not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({err})") from err
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ValueError(f"{path}: expected a mapping of TrainConfig fields, got {type(raw).__name__}")
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    values: dict[str, Any] = {}
    for key, value in raw.items():
        name = str(key).replace("-", "_")
        if name not in names:
            close = difflib.get_close_matches(name, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"{path}: unknown key {key!r}{hint}; known keys: {', '.join(names)}")
        if name == "config":
            raise ValueError(f"{path}: key 'config' is not allowed inside a config file")
        if name in _TUPLE_FIELDS and isinstance(value, (str, int)):
            value = (value,)  # `cameras: head,left_wrist` / `val_episodes: 3`
        values[name] = tuple(value) if isinstance(value, list) else value
    return values


def _config_flag(args: Sequence[str]) -> Path | None:
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--config", type=Path, default=None)
    known, _ = pre.parse_known_args(list(args))
    return known.config


def has_config_flag(args: Sequence[str]) -> bool:
    """Whether ``--config FILE`` (or ``--config=FILE``) is among the ``vla train`` arguments."""
    return _config_flag(args) is not None


def parse_train_args(args: Sequence[str], prog: str = "vla train") -> TrainConfig:
    """Parse ``vla train`` arguments with ``--config FILE`` supplying the defaults.

    The YAML fields become the default instance of ``tyro.cli(TrainConfig, default=...)``; flags given
    explicitly override them; ``data`` / ``out`` stay required unless the file sets them.

    Raises:
        FileNotFoundError / ValueError: an unreadable file or unknown key (before any parsing);
        SystemExit: tyro's usage errors (and --help).
    """
    path = _config_flag(args)
    if path is None:
        return tyro.cli(TrainConfig, args=list(args), prog=prog)
    values = load_yaml_fields(path)
    values["config"] = path
    default = object.__new__(TrainConfig)  # not validated: tyro builds (and validates) the final instance
    for f in dataclasses.fields(TrainConfig):
        if f.name in values:
            value = values[f.name]
            if f.name in ("data", "out", "base") and value is not None:
                value = Path(value)
        elif f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            value = tyro.MISSING  # required on the command line
        setattr(default, f.name, value)
    return tyro.cli(TrainConfig, args=list(args), default=default, prog=prog)


@dataclasses.dataclass
class MergeLoraConfig:
    """Fold a LoRA checkpoint's adapter into its base weights and write a finetune=full checkpoint directory."""

    checkpoint: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="CKPT")]
    """A LoRA checkpoint directory (RUN/checkpoints/step_N, RUN/checkpoints/last or RUN)."""
    out: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="OUT")]
    """Output directory (written atomically; must not exist unless --overwrite)."""
    base: Path | None = None
    """OpenVLA-format base folder (default: the `base` recorded in the checkpoint's config.json)."""
    overwrite: bool = False
    """Replace OUT if it exists."""

    def __post_init__(self) -> None:
        self.checkpoint, self.out = Path(self.checkpoint), Path(self.out)
        self.base = Path(self.base) if self.base is not None else None
