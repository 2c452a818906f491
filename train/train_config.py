"""Config of ``vla train`` (:class:`TrainConfig`) and ``vla merge-lora`` (:class:`MergeLoraConfig`).

Light on purpose: no torch import, so ``vla --help`` stays fast. Field docstrings are the ``--help`` text.

:class:`TrainConfig` is composed of groups, each the owner of its fields and of their checks: ``data``
(:class:`train.config.DataConfig`), ``model`` (:class:`ModelConfig`), ``finetune`` (:class:`FinetuneConfig`),
``optim`` (:class:`OptimConfig`), ``compute`` (:class:`ComputeConfig`) and ``cadence`` (:class:`CadenceConfig`).
The flags stay flat (``--lr``, ``--chunk-size``: ``tyro.conf.OmitArgPrefixes``), ``--help`` shows one box per
group, and so do config files: a YAML file holds flag names as keys (``--config run.yaml``, read by
``common.config_files``; explicit flags override it)::

    data: data/LiftBar
    out: runs/liftbar-tiny
    preset: tiny
    steps: 20000
    cameras: [head, left_wrist]
    model_overrides: {llm: {num_layers: 2}}     # YAML only: VLAConfig.replace(...) after the preset

Model knobs: every knob is a field of ``policies.openvla.config.VLAConfig`` marked ``knob()`` there, with its
docstring and its check; the model group is made from those marks (``_model_config_class``), so a new knob is one
field in VLAConfig. ``--base`` keeps the base's vision towers, projector, LLM (with lm_head), tokenizer and image
normalization; the action head / proprio projector / FiLM are kept when their shapes fit the new chunk/proprio
settings, else freshly initialised. ``model_overrides`` (YAML or Python only) sets any VLAConfig field after the
knobs, e.g. ``{llm: {num_layers: 2}}``.

Optimisation: global batch = batch_size x grad_accum x processes (warned below 16). multistep multiplies the lr by
lr_gamma at each milestone, as the seeds do (5e-4 -> 5e-5 at 40k of 50k); cosine decays to 0 after warmup;
constant stays at lr after warmup. Compute: mixed_precision auto picks bf16 on a CUDA device that supports it and
on a CPU where a measured probe (``vla doctor`` shows it) finds bf16 matmul faster than float32; otherwise float32.
The run's statistics go to RUN/dataset_statistics.json and into every checkpoint; the model sees normalized
actions/proprio. Runs on one device or under `accelerate launch` (DDP).

Checkpoints record the same flat names (:meth:`TrainConfig.to_dict`), so a resume compares like with like; the
flags renamed since (``eval_every`` -> ``bench_every``, ``eval_benchmark`` -> ``benchmark``) are read under their
new names from older files and checkpoints (:data:`LEGACY_FLAGS`).
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import tyro

from common.config_files import build, flag_fields, parse_with_config, read_config_file
from common.names import closest, did_you_mean
from train.config import DataConfig
from train.optim_config import OptimConfig, int_at_least

Preset = Literal["tiny", "openvla-7b"]
Finetune = Literal["lora", "full"]
MixedPrecision = Literal["no", "bf16", "auto"]
Device = Literal["auto", "cpu", "cuda"]
MIN_GLOBAL_BATCH = 16
"""Global batches below this collapse to replaying one trajectory (RoboTwin's OpenVLA-OFT port warns so)."""

RESUME_FREE_FIELDS = frozenset(
    {
        "out",
        "steps",
        "lr_milestones",
        "log_every",
        "save_every",
        "keep_last",
        "val_every",
        "val_batches",
        "bench_every",
        "benchmark",
        "resume",
        "config",
        "wandb",
        "wandb_project",
        "num_workers",
        "threads",
        "progress",
    }
)
"""Flags that may differ between a run and its ``--resume``: everything else changes the run and is refused.
``steps`` may grow; the lr schedule follows the new ``steps`` (a warning says when that changes the lr of steps
already done, e.g. default multistep milestones or cosine, so the result differs from an uninterrupted run).
``lr_milestones`` may change too, so that a run extended with more ``steps`` keeps the decay it had (the same
warning fires when the new milestones change the lr of steps already done)."""
LEGACY_FLAGS = {"eval_every": "bench_every", "eval_benchmark": "benchmark"}
"""Old flag name -> current one, for config files and checkpoints written before the rename."""


@dataclasses.dataclass
class _ModelBase:
    """Model: the architecture preset (or an OpenVLA-format base checkpoint) and the knobs applied to it."""

    preset: Preset = "tiny"
    """Architecture preset: tiny (trains on a CPU) or openvla-7b; --base overrides it."""
    base: Path | None = None
    """OpenVLA-format checkpoint folder to start from (config.json + safetensors + tokenizer)."""
    model_overrides: Annotated[dict[str, Any], tyro.conf.Suppress] = dataclasses.field(default_factory=dict)
    """(YAML / Python only) VLAConfig fields applied after the preset and the knobs."""

    def __post_init__(self) -> None:
        from policies.openvla.config import VLAConfig, preset

        self.base = Path(self.base) if self.base is not None else None
        if not isinstance(self.model_overrides, Mapping):
            raise ValueError(f"model_overrides must be a mapping of VLAConfig fields, got {self.model_overrides!r}")
        self.model_overrides = dict(self.model_overrides)
        if self.base is not None and not (self.base / "config.json").is_file():
            raise ValueError(f"base: {self.base} is not an OpenVLA-format checkpoint folder (no config.json there)")
        if self.base is not None and getattr(self, "image_size", None) is not None:
            raise ValueError(
                f"image_size={self.image_size}: the input size of a --base checkpoint is fixed by its "
                "position embeddings; drop --image-size"
            )
        known = {f.name for f in dataclasses.fields(VLAConfig)}
        unknown = sorted(set(self.model_overrides) - known)
        if unknown:
            hints = ", ".join(f"{u} (did you mean {c}?)" if (c := closest(u, known)) else u for u in unknown)
            raise ValueError(f"model_overrides: unknown VLAConfig field(s) {hints}")
        if self.base is None:  # every knob and override is checked by VLAConfig, the owner of the fields
            preset(self.preset, **self.knobs())

    def knobs(self) -> dict[str, Any]:
        """The VLAConfig fields this group sets (None knobs keep the preset's / base's value), overrides last."""
        from policies.openvla.config import knob_names

        values = {name: getattr(self, name) for name in knob_names() if getattr(self, name) is not None}
        return {**values, **self.model_overrides}


def _model_config_class() -> type:
    """:class:`_ModelBase` plus one field per VLAConfig knob, help = the first sentence of VLAConfig's field
    docstring. Switches keep VLAConfig's default; every other knob defaults to None, "the preset's (or --base's)
    value", so an unset knob never contradicts a base checkpoint."""
    import typing

    from common.config_files import field_docstrings, first_sentence
    from policies.openvla.config import VLAConfig, knob_names

    hints, docs = typing.get_type_hints(VLAConfig), field_docstrings(VLAConfig)
    fields = {f.name: f for f in dataclasses.fields(VLAConfig)}
    spec = []
    for name in knob_names():
        tp, default, help_text = hints[name], fields[name].default, first_sentence(docs.get(name, name))
        if tp is not bool:
            tp, default, help_text = tp | None, None, f"{help_text} (None: the preset's or --base's value)"
        spec.append((name, Annotated[tp, tyro.conf.arg(help=help_text)], dataclasses.field(default=default)))
    cls = dataclasses.make_dataclass("ModelConfig", spec, bases=(_ModelBase,))
    cls.__doc__, cls.__module__ = _ModelBase.__doc__, __name__
    return cls


ModelConfig = _model_config_class()


@dataclasses.dataclass
class FinetuneConfig:
    """Fine-tuning: which weights train (LoRA adapters on the LLM + projector with the heads, or every weight)."""

    mode: Annotated[Finetune | None, tyro.conf.arg(name="finetune")] = None
    """lora or full (default: lora with --base; full without, the tiny preset's weights being random)."""
    lora_rank: int = 32
    """LoRA rank r (OpenVLA-OFT: 32)."""
    lora_alpha: int = 16
    """LoRA alpha; the adapter's scale is alpha / r (OpenVLA-OFT: min(r, 16))."""
    lora_dropout: float = 0.0
    """LoRA dropout (OpenVLA-OFT: 0)."""

    def __post_init__(self) -> None:
        if self.mode not in (None, "lora", "full"):
            raise ValueError(f"finetune must be 'lora' or 'full', got {self.mode!r}")
        int_at_least(self, 1, "lora_rank")
        if self.lora_alpha <= 0 or not 0 <= self.lora_dropout < 1:
            raise ValueError(
                f"lora_alpha must be > 0 and lora_dropout in [0, 1), got {self.lora_alpha}, {self.lora_dropout}"
            )


@dataclasses.dataclass
class ComputeConfig:
    """Compute: device, precision, threads and data-loading processes."""

    mixed_precision: MixedPrecision = "auto"
    """no (float32), bf16 (autocast) or auto (bf16 only where this machine runs it faster)."""
    device: Device = "auto"
    """auto (CUDA when available), cpu or cuda."""
    threads: int | None = None
    """torch CPU threads per process (default: torch's choice)."""
    num_workers: int = 2
    """DataLoader worker processes per device, which only read uint8 frames (0: read in the main process)."""
    torch_compile: bool = False
    """torch.compile the vision towers and the Llama decoder."""

    def __post_init__(self) -> None:
        int_at_least(self, 0, "num_workers")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {self.threads}")


@dataclasses.dataclass
class CadenceConfig:
    """Cadence: how often to log, validate, benchmark in the simulator and save, and where logs go."""

    log_every: int = 10
    """Log train metrics every N steps (TensorBoard in RUN/tensorboard, metrics.jsonl, wandb)."""
    save_every: int = 1000
    """Write a checkpoint every N steps (and always at the last step)."""
    keep_last: int | None = None
    """Keep only the newest N checkpoints (None keeps all)."""
    val_every: int = 500
    """Validation L1 on the held-out episodes every N steps and at the last step (needs a val split)."""
    val_batches: int = 8
    """Batches per validation pass (the same fixed batches every time)."""
    bench_every: Annotated[int, tyro.conf.arg(aliases=("--eval-every",))] = 0
    """Benchmark the current weights in the simulator every N steps into RUN/bench/step_N (0: never)."""
    benchmark: Annotated[str | None, tyro.conf.arg(aliases=("--eval-benchmark",))] = None
    """Named benchmark (or spec YAML) that --bench-every runs."""
    wandb: bool = False
    """Also log to Weights & Biases (offline unless WANDB_MODE says otherwise; needs `pip install wandb`)."""
    wandb_project: str = "vla-harness"
    """wandb project name."""

    def __post_init__(self) -> None:
        int_at_least(self, 1, "log_every", "save_every", "val_every", "val_batches")
        int_at_least(self, 0, "bench_every")
        if self.keep_last is not None and self.keep_last < 1:
            raise ValueError(f"keep_last must be >= 1 or None, got {self.keep_last}")
        if self.wandb and importlib.util.find_spec("wandb") is None:
            raise ValueError("wandb=True but the wandb package is not installed (pip install wandb, or drop --wandb)")


@dataclasses.dataclass
class TrainConfig:
    """Fine-tune a VLA on an episode folder and write RUN/checkpoints/step_{N}/ (RUN/checkpoints/last -> newest)."""

    data: Annotated[DataConfig, tyro.conf.arg(name="data")]
    out: Path
    """Run folder: checkpoints/, tensorboard/, metrics.jsonl, dataset_statistics.json."""
    model: Annotated[ModelConfig, tyro.conf.arg(name="model")] = dataclasses.field(default_factory=ModelConfig)
    finetune: Annotated[FinetuneConfig, tyro.conf.arg(name="fine-tuning")] = dataclasses.field(
        default_factory=FinetuneConfig
    )
    optim: Annotated[OptimConfig, tyro.conf.arg(name="optimisation")] = dataclasses.field(default_factory=OptimConfig)
    compute: Annotated[ComputeConfig, tyro.conf.arg(name="compute")] = dataclasses.field(default_factory=ComputeConfig)
    cadence: Annotated[CadenceConfig, tyro.conf.arg(name="cadence")] = dataclasses.field(default_factory=CadenceConfig)
    seed: int = 0
    """Seed of the model init, episode split, sample order, instruction choice and augmentation."""
    resume: bool = False
    """Continue RUN exactly from RUN/checkpoints/last (model, optimizer, scheduler, RNG, data order)."""
    config: Path | None = None
    """YAML file of flags; flags given on the command line override it (recorded in config.json)."""
    progress: bool = True
    """Show a progress bar (tqdm) with ETA and loss."""

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if self.out.exists() and not self.out.is_dir():
            raise ValueError(f"out: {self.out} exists and is not a folder")
        self.config = Path(self.config) if self.config is not None else None
        int_at_least(self, 0, "seed")
        self.data.seed = self.seed  # the split and the instruction choice follow the run's seed
        self.data.__post_init__()
        for knob in ("proprio_noise", "proprio_noise_dims"):
            if getattr(self.model, knob) and not self.data.use_proprio:
                raise ValueError(f"{knob}={getattr(self.model, knob)} needs use_proprio (the model gets no proprio)")
        if self.finetune.mode is None:
            self.finetune.mode = "lora" if self.model.base is not None else "full"

    # ---- flat view (config files, checkpoints, resume) --------------------------------------------------------
    @classmethod
    def from_flat(cls, **flat: Any) -> TrainConfig:
        """Build (and validate) from flat flag names, e.g. ``TrainConfig.from_flat(data=d, out=o, lr=1e-4)``.

        Raises:
            ValueError: an unknown flag name (with the closest one) or an invalid value (from the group's checks).
        """
        fields = flag_fields(cls)
        flat = {LEGACY_FLAGS.get(k, k): v for k, v in flat.items()}
        unknown = sorted(set(flat) - set(fields))
        if unknown:
            raise ValueError(f"TrainConfig: unknown field(s) {unknown}{did_you_mean(unknown[0], fields)}")
        return build(cls, flat)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready ``{flag name: value}`` (paths as strings, tuples as lists; lr_milestones unresolved)."""
        out = {}
        for name, field in flag_fields(type(self)).items():
            value: Any = self
            for part in field.path:
                value = getattr(value, part)
            if isinstance(value, tuple):
                value = [str(v) if isinstance(v, Path) else v for v in value]
            out[name] = str(value) if isinstance(value, Path) else value
        out["model_overrides"] = dict(self.model.model_overrides)
        return out

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        """Build from a YAML file of flags, then ``overrides`` (flat Python values).

        Raises:
            FileNotFoundError: no file. ValueError: not a mapping, an unknown key (with the closest flag), a
                missing required field (data / out) or an invalid value.
        """
        values = {**read_config_file(path, cls, LEGACY_FLAGS), "config": Path(path), **overrides}
        missing = [name for name in ("data", "out") if name not in values]
        if missing:
            raise ValueError(f"{path}: missing required field(s) {missing} (give them in the file or as arguments)")
        return cls.from_flat(**values)

    def milestones(self) -> tuple[int, ...]:
        """Multistep milestones of the run (see :meth:`OptimConfig.milestones`)."""
        return self.optim.milestones()

    def model_fields(self) -> dict[str, Any]:
        """The VLAConfig fields this run sets: those the data fixes (cameras, chunk size, proprio, normalization),
        then the model knobs, then ``model_overrides``."""
        data = {
            "cameras": self.data.cameras,
            "chunk_size": self.data.chunk_size,
            "proprio_dim": 14 if self.data.use_proprio else 0,
            "norm_mode": self.data.norm_mode,
        }
        return {**data, **self.model.knobs()}


def parse_train_args(args: Sequence[str], prog: str = "vla train") -> TrainConfig:
    """Parse ``vla train`` arguments; ``--config FILE`` supplies the defaults (``common.config_files``).

    Raises:
        FileNotFoundError / ValueError: an unreadable file or unknown key (before any parsing);
        SystemExit: tyro's usage errors (and --help).
    """
    return parse_with_config(
        TrainConfig,
        args,
        prog,
        LEGACY_FLAGS,
        wrap=Annotated[tyro.conf.OmitArgPrefixes[TrainConfig], tyro.conf.arg(name="")],
    )


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
