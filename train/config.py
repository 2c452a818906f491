"""Config dataclasses of the training data pipeline (``DataConfig``) and of ``vla data check``.

Light on purpose: no torch or h5py import, so ``vla --help`` stays fast. Field docstrings are the ``--help`` text
(one sentence each: tyro keeps their line breaks).

A training sample is step t of an episode: its frames, proprio and instruction, and the chunk of actions
t .. t+H-1 (H = chunk_size). With pad_end the last H-1 steps are sampled too, the chunk padded with the last action
and the padded rows marked in ``action_is_pad`` (otherwise T - H + 1 samples per episode). Normalization:
bounds_q99 maps q01/q99 to [-1, 1], bounds min/max, normal mean/std. Validation holds out whole episodes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Literal

import tyro

from common.config_files import named_number
from envs.config import parse_cameras
from policies.normalization import NORM_MODES

ACTION_KEYS = ("action", "relative_action")
INSTRUCTION_SPLITS = ("seen", "unseen", "both")
ActionKey = Literal["action", "relative_action"]
InstructionSplit = Literal["seen", "unseen", "both"]
NormMode = Literal["bounds_q99", "bounds", "normal"]


def _check_common(
    cameras: tuple[str, ...], chunk_size: int, action_key: str, instructions: str, allow_no_cameras: bool
) -> tuple[str, ...]:
    """Validate the fields DataConfig and DataCheckConfig share; return the normalised camera tuple."""
    cameras = parse_cameras(tuple(cameras))
    if not cameras and not allow_no_cameras:
        raise ValueError("cameras must name 1-4 cameras (head,left_wrist,right_wrist,low), got none")
    if len(cameras) > 4:
        raise ValueError(f"cameras must name 1-4 cameras, got {len(cameras)}: {cameras}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
    if action_key not in ACTION_KEYS:
        raise ValueError(f"action_key must be one of {list(ACTION_KEYS)}, got {action_key!r}")
    if instructions not in INSTRUCTION_SPLITS:
        raise ValueError(f"instructions must be one of {list(INSTRUCTION_SPLITS)}, got {instructions!r}")
    return cameras


def _task_weight(item: str) -> tuple[str, float]:
    """``"TASK=WEIGHT"`` -> (task, weight); ValueError naming the item otherwise."""
    parsed = named_number(item)
    if parsed is None:
        raise ValueError(f"task_weights: expected TASK=WEIGHT (e.g. DualArmLiftBar-v1=2), got {item!r}")
    return parsed


@dataclasses.dataclass
class DataConfig:
    """Data: which episodes, cameras, actions and instructions a run reads, and how they are normalized."""

    data_dir: Annotated[Path, tyro.conf.arg(name="data")]
    """Folder of episode_{i}.hdf5 files (from `vla demos` or a RoboTwin-style export)."""
    more_data: tuple[Path, ...] = ()
    """More episode folders trained together with --data (multi-task: e.g. one `vla demos` folder per task)."""
    task_weights: tuple[str, ...] = ()
    """Per-task sampling weights as TASK=WEIGHT (episode `task` attr; every task named); none: every sample alike."""
    constant_instruction: str | None = None
    """Replace every instruction by this string, in training and at inference (an instruction-blind baseline)."""
    cameras: tuple[str, ...] = ("head", "left_wrist")
    """1-4 cameras (head,left_wrist,right_wrist,low), in the model's view order."""
    chunk_size: int = 8
    """Actions per training target (H)."""
    action_key: ActionKey = "action"
    """Action dataset to learn: action (absolute targets) or relative_action (action[t+1] - action[t])."""
    use_proprio: bool = False
    """Feed the 14-D proprio of step t to the model (episodes must contain a `proprio` dataset)."""
    instructions: InstructionSplit = "seen"
    """Instruction pool sampled per sample: seen, unseen or both."""
    instruction_word_noise: float = 0.0
    """Training only: probability that each word of a sampled instruction is replaced by a random 2-7 letter string
    (word dropout to unknown words, train.dataset.noisy_instruction), so a from-scratch LLM meets untrained tokens
    before it meets unseen phrasings; 0 = off. Validation, inference and constant_instruction runs see it unchanged."""
    pad_end: bool = False
    """Also train on the last chunk_size-1 steps of each episode (padded chunks, masked)."""
    norm_mode: NormMode = "bounds_q99"
    """Action/proprio normalization: bounds_q99, bounds or normal."""
    normalize_grippers: bool = False
    """Also normalize the two gripper dims (already in [-1, 1]; off as in OpenVLA-OFT)."""
    unnorm_key: str | None = None
    """Key of the statistics in dataset_statistics.json (default: the episodes' shared task, else the folder)."""
    val_fraction: float = 0.0
    """Fraction of episodes held out for validation, chosen with --seed (0: none)."""
    val_episodes: tuple[int, ...] = ()
    """Explicit episode indices held out for validation (excludes --val-fraction)."""
    seed: tyro.conf.Suppress[int] = 0
    """Seed of the train/val split and of the per-sample instruction choice (the run's --seed)."""
    keyposes: tyro.conf.Suppress[bool] = False
    """Also give each sample both arms' next keyposes (train.dataset.next_keyposes); set by the trainer once the
    model is built, to whether it has ``keypose_aux``. Needs action_key ``action`` (absolute targets)."""

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        self.cameras = _check_common(self.cameras, self.chunk_size, self.action_key, self.instructions, False)
        if self.norm_mode not in NORM_MODES:
            raise ValueError(f"norm_mode must be one of {list(NORM_MODES)}, got {self.norm_mode!r}")
        if not 0.0 <= self.instruction_word_noise < 1.0:
            raise ValueError(f"instruction_word_noise must be in [0, 1), got {self.instruction_word_noise}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        self.val_episodes = tuple(int(i) for i in self.val_episodes)
        if self.keyposes and self.action_key != "action":
            raise ValueError(f"keyposes (keypose_aux) need action_key 'action', got {self.action_key!r}")
        if self.val_episodes and self.val_fraction > 0:
            raise ValueError(
                f"give either val_fraction ({self.val_fraction}) or val_episodes ({self.val_episodes}), not both"
            )
        if len(set(self.val_episodes)) != len(self.val_episodes):
            raise ValueError(f"val_episodes lists an episode twice: {self.val_episodes}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        self._check_multi()
        if self.unnorm_key is not None and not self.unnorm_key.strip():
            raise ValueError(f"unnorm_key must be a non-empty string or None, got {self.unnorm_key!r}")

    @property
    def data_dirs(self) -> tuple[Path, ...]:
        """Every episode folder of the run: ``data_dir`` then ``more_data``."""
        return (self.data_dir, *self.more_data)

    def _check_multi(self) -> None:
        self.more_data = tuple(Path(p) for p in self.more_data)
        resolved = [p.resolve() for p in self.data_dirs]
        if len(set(resolved)) != len(resolved):
            raise ValueError(f"more_data repeats a folder: {[str(p) for p in self.data_dirs]}")
        if self.more_data and self.val_episodes:
            raise ValueError(
                "val_episodes names episode indices of one folder; with more_data (several folders) use val_fraction"
            )
        items = self.task_weights.items() if isinstance(self.task_weights, dict) else None
        if items is None:
            items = [_task_weight(str(x)) for x in self.task_weights]
        weights = {str(k): float(v) for k, v in items}
        if len(weights) != len(list(items)):
            raise ValueError(f"task_weights names a task twice: {list(self.task_weights)}")
        bad = {k: v for k, v in weights.items() if not v >= 0}
        if bad or (weights and not any(weights.values())):
            raise ValueError(f"task_weights must be >= 0 with at least one > 0, got {weights}")
        self.task_weights = tuple(f"{k}={v:g}" for k, v in weights.items())
        if self.constant_instruction is not None and not self.constant_instruction.strip():
            raise ValueError("constant_instruction must be a non-empty string or None, got an empty string")

    @property
    def weights_by_task(self) -> dict[str, float]:
        """``task_weights`` as {task: weight} ({} when none are given)."""
        return dict(_task_weight(x) for x in self.task_weights)


@dataclasses.dataclass
class DataCheckConfig:
    """Validate an episode folder and print a summary (episodes, steps, cameras, action ranges, instructions)."""

    data_dir: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="DIR")]
    """Folder of episode_{i}.hdf5 files."""
    cameras: tuple[str, ...] = ()
    """Cameras that must be present (default: report the cameras every episode has; at least one)."""
    chunk_size: int = 8
    """Chunk size the data will be trained with (episodes shorter than this are errors unless --pad-end)."""
    action_key: ActionKey = "action"
    """Action dataset to check: action or relative_action."""
    use_proprio: bool = False
    """Require a valid `proprio` dataset in every episode."""
    instructions: InstructionSplit = "both"
    """Instruction split(s) that must exist: seen, unseen or both (= at least one of them)."""
    pad_end: bool = False
    """Count end-padded samples (T per episode) and allow episodes shorter than the chunk."""
    deep: bool = False
    """Also read every image frame (finds corrupt compressed chunks; slower)."""

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        self.cameras = _check_common(self.cameras, self.chunk_size, self.action_key, self.instructions, True)
