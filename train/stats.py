"""Train/val episode split and action/proprio normalization statistics (``dataset_statistics.json``).

:func:`prepare_data` is the one entry point a trainer calls before it writes anything: validate the folder,
split episodes, compute statistics over the TRAIN episodes, then (only then) save them. Statistics use
``policies.normalization.ArrayStats.compute`` (openvla ``get_dataset_statistics`` expressions: mean, std, min,
max, q01, q99 over all steps) with ``mask`` False on the gripper dims (``envs.layout.GRIPPER_DIMS``) unless
``normalize_grippers``, as OpenVLA-OFT leaves the gripper unnormalized.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from envs.layout import ACTION_DIM, GRIPPER_DIMS
from policies.normalization import ArrayStats, NormStats, save_dataset_statistics
from train.config import DataConfig
from train.episodes import DatasetSummary, EpisodeDataError, EpisodeInfo, validate_episode_dir


@dataclasses.dataclass(frozen=True)
class PreparedData:
    """A validated folder, its episode split and the statistics computed on the training episodes.

    Attributes:
        summary: what validation found (all episodes).
        train_episodes, val_episodes: the episode-level split (val may be empty), each sorted by index.
        unnorm_key: the key the statistics are stored under.
        norm_stats: statistics of the training episodes (``proprio`` set only when ``cfg.use_proprio``).
        stats_path: where ``dataset_statistics.json`` was written, or None.
        task_stats: per-task statistics of the training episodes (task -> NormStats), recorded next to the
            combined ones when the data holds more than one task (empty otherwise); training normalizes with
            ``norm_stats`` only.
    """

    summary: DatasetSummary
    train_episodes: tuple[EpisodeInfo, ...]
    val_episodes: tuple[EpisodeInfo, ...]
    unnorm_key: str
    norm_stats: NormStats
    stats_path: Path | None = None
    task_stats: dict[str, NormStats] = dataclasses.field(default_factory=dict)

    def all_stats(self) -> dict[str, NormStats]:
        """``{unnorm_key: norm_stats, task: stats, ...}``: what ``dataset_statistics.json`` holds."""
        return {**self.task_stats, self.unnorm_key: self.norm_stats}


def episode_task(episode: EpisodeInfo) -> str:
    """The episode's ``task`` attribute, else the name of its folder."""
    return str(episode.attrs.get("task") or episode.path.parent.name)


def normalization_mask(normalize_grippers: bool) -> np.ndarray:
    """(14,) bool mask: True for every dim except the gripper dims (6, 13) unless ``normalize_grippers``."""
    mask = np.ones(ACTION_DIM, dtype=bool)
    if not normalize_grippers:
        mask[list(GRIPPER_DIMS)] = False
    return mask


def split_episodes(episodes: Sequence[EpisodeInfo], cfg: DataConfig) -> tuple[list[EpisodeInfo], list[EpisodeInfo]]:
    """Episode-level train/val split, folder by folder (each of ``cfg.data_dirs`` is split on its own, so every
    task keeps validation episodes); an episode is never split. See :func:`split_folder`.

    Returns:
        (train, val), each in folder order, then sorted by index.
    """
    train: list[EpisodeInfo] = []
    val: list[EpisodeInfo] = []
    for folder in dict.fromkeys(e.path.parent for e in episodes):
        t, v = split_folder([e for e in episodes if e.path.parent == folder], cfg)
        train, val = train + t, val + v
    return train, val


def split_folder(episodes: Sequence[EpisodeInfo], cfg: DataConfig) -> tuple[list[EpisodeInfo], list[EpisodeInfo]]:
    """Episode-level train/val split of one folder's episodes.

    ``cfg.val_episodes`` (episode indices) if given, else ``max(1, round(val_fraction * N))`` episodes taken from
    ``np.random.default_rng(cfg.seed).permutation(N)`` over the episodes sorted by index (deterministic given the
    seed and the episode set), else no validation episodes.

    Returns:
        (train, val), each sorted by index.

    Raises:
        EpisodeDataError: a val_episodes index not in the folder, or a split that leaves no training episode.
    """
    ordered = sorted(episodes, key=lambda e: e.index)
    present = [e.index for e in ordered]
    if cfg.val_episodes:
        missing = sorted(set(cfg.val_episodes) - set(present))
        if missing:
            raise EpisodeDataError(
                f"{cfg.data_dir}: val_episodes {missing} not found: expected indices of "
                f"episode_{{i}}.hdf5 files, got {present[:10]}{' ...' if len(present) > 10 else ''}"
            )
        val_idx = set(cfg.val_episodes)
    elif cfg.val_fraction > 0:
        n_val = max(1, round(cfg.val_fraction * len(ordered)))
        order = np.random.default_rng(cfg.seed).permutation(len(ordered))
        val_idx = {ordered[i].index for i in order[:n_val]}
    else:
        val_idx = set()
    train = [e for e in ordered if e.index not in val_idx]
    val = [e for e in ordered if e.index in val_idx]
    if not train:
        raise EpisodeDataError(
            f"{ordered[0].path.parent if ordered else cfg.data_dir}: val_fraction={cfg.val_fraction} / "
            f"val_episodes={cfg.val_episodes} "
            f"leaves no training episode: expected >= 1 of {len(ordered)}, got 0"
        )
    return train, val


def _read_rows(episodes: Sequence[EpisodeInfo], key: str) -> np.ndarray:
    """Concatenate dataset ``key`` ((T, 14) each) of every episode to (sum T, 14) float64."""
    import h5py

    parts = []
    for e in episodes:
        with h5py.File(e.path, "r") as f:
            parts.append(np.asarray(f[key][()], dtype=np.float64))
    return np.concatenate(parts, axis=0)


def compute_norm_stats(
    episodes: Sequence[EpisodeInfo],
    action_key: str = "action",
    use_proprio: bool = False,
    normalize_grippers: bool = False,
) -> NormStats:
    """Statistics of every step of ``episodes``: ``action`` from ``action_key`` and, if ``use_proprio``, proprio.

    Both use :func:`normalization_mask` (the proprio gripper is in the same [-1, 1] scale as the action's).

    Raises:
        ValueError: no episodes, or NaN/Inf in the data (``ArrayStats.compute``).
        OSError: a file became unreadable since validation.
    """
    if not episodes:
        raise ValueError("compute_norm_stats: expected at least one episode, got none")
    mask = normalization_mask(normalize_grippers)
    actions = _read_rows(episodes, action_key)
    proprio = ArrayStats.compute(_read_rows(episodes, "proprio"), mask) if use_proprio else None
    return NormStats(
        action=ArrayStats.compute(actions, mask),
        proprio=proprio,
        num_transitions=int(actions.shape[0]),
        num_trajectories=len(episodes),
    )


def derive_unnorm_key(summary: DatasetSummary, unnorm_key: str | None = None) -> str:
    """``unnorm_key`` if given, else the ``task`` attribute shared by every episode, else the folder name."""
    if unnorm_key:
        return unnorm_key
    tasks = summary.tasks
    if len(tasks) == 1 and all(e.attrs.get("task") for e in summary.episodes):
        return tasks[0]
    folders = dict.fromkeys(e.path.parent for e in summary.episodes)
    if len(folders) > 1:  # several folders: name the mixture by its tasks
        return "+".join(sorted({episode_task(e) for e in summary.episodes}))
    return Path(summary.data_dir).resolve().name


def validate_folders(cfg: DataConfig) -> DatasetSummary:
    """:func:`validate_episode_dir` of every folder in ``cfg.data_dirs``, merged into one summary (episodes in
    folder order; ``data_dir`` is the first folder).

    Raises:
        EpisodeDataError: a folder's problems (see :func:`validate_episode_dir`), or folders whose frames differ
            in size or that share no camera.
    """
    if not cfg.more_data:
        return validate_episode_dir(cfg)
    parts = [validate_episode_dir(dataclasses.replace(cfg, data_dir=d, more_data=())) for d in cfg.data_dirs]
    sizes = {str(p.data_dir): p.image_size for p in parts}
    if len(set(sizes.values())) > 1:
        raise EpisodeDataError(f"frame sizes differ across folders: expected one (H, W), got {sizes}")
    cameras = tuple(c for c in parts[0].cameras if all(c in p.cameras for p in parts))
    if not cameras:
        found = {str(p.data_dir): list(p.cameras) for p in parts}
        raise EpisodeDataError(f"the folders share no camera: {found}")
    return dataclasses.replace(
        parts[0],
        episodes=tuple(e for p in parts for e in p.episodes),
        cameras=cameras,
        warnings=tuple(w for p in parts for w in p.warnings),
    )


def per_task_stats(episodes: Sequence[EpisodeInfo], cfg: DataConfig) -> dict[str, NormStats]:
    """Statistics of each task's episodes (:func:`episode_task`), or {} when there is a single task."""
    tasks = sorted({episode_task(e) for e in episodes})
    if len(tasks) < 2:
        return {}
    return {
        t: compute_norm_stats(
            [e for e in episodes if episode_task(e) == t], cfg.action_key, cfg.use_proprio, cfg.normalize_grippers
        )
        for t in tasks
    }


def sample_weights(episodes: Sequence[EpisodeInfo], cfg: DataConfig) -> np.ndarray | None:
    """(N,) float64 probabilities of the N training samples under ``cfg.task_weights``: a task's samples share
    its weight / (sum of weights) equally; None without weights (every sample alike).

    Raises:
        EpisodeDataError: ``task_weights`` misses a task of the data or names one that is not in it.
    """
    by_task = cfg.weights_by_task
    if not by_task:
        return None
    tasks = [episode_task(e) for e in episodes]
    present = sorted(set(tasks))
    missing = [t for t in present if t not in by_task]
    unknown = sorted(set(by_task) - set(present))
    if missing or unknown:
        raise EpisodeDataError(
            f"task_weights must name every task of the data exactly: expected {present}, got "
            f"{sorted(by_task)} (missing {missing}, unknown {unknown})"
        )
    counts = np.array([e.num_samples(cfg.chunk_size, cfg.pad_end) for e in episodes], dtype=np.float64)
    per_task = {t: counts[[i for i, x in enumerate(tasks) if x == t]].sum() for t in present}
    if not any(by_task[t] > 0 and per_task[t] > 0 for t in present):
        raise EpisodeDataError(f"task_weights {by_task}: no task with weight > 0 has training samples")
    per_sample = [by_task[t] / per_task[t] if per_task[t] else 0.0 for t in tasks]
    weights = np.repeat(np.array(per_sample), counts.astype(np.int64))
    return weights / weights.sum()


def prepare_data(cfg: DataConfig, stats_path: str | Path | None = None) -> PreparedData:
    """Validate ``cfg.data_dirs``, split episodes, compute train statistics and, if ``stats_path`` is given, write
    ``{unnorm_key: stats}`` there atomically (``save_dataset_statistics``). Nothing is written unless every
    step before it succeeded.

    Raises:
        EpisodeDataError: invalid data or split (see :func:`validate_episode_dir`, :func:`split_episodes`).
    """
    summary = validate_folders(cfg)
    train, val = split_episodes(summary.episodes, cfg)
    key = derive_unnorm_key(summary, cfg.unnorm_key)
    stats = compute_norm_stats(train, cfg.action_key, cfg.use_proprio, cfg.normalize_grippers)
    prepared = PreparedData(
        summary=summary,
        train_episodes=tuple(train),
        val_episodes=tuple(val),
        unnorm_key=key,
        norm_stats=stats,
        task_stats=per_task_stats(train, cfg),
    )
    sample_weights(train, cfg)  # refuse bad task_weights before anything is written
    if stats_path is not None:
        prepared = dataclasses.replace(prepared, stats_path=save_dataset_statistics(stats_path, prepared.all_stats()))
    return prepared
