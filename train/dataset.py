"""PyTorch dataset over a folder of episode files: one sample = (images at t, action chunk t .. t+chunk-1).

    prepared = prepare_data(cfg, stats_path=run_dir / "dataset_statistics.json")  # validates first
    train_ds = EpisodeDataset(cfg, prepared.train_episodes, prepared.norm_stats, transform=processor_fn)
    loader = DataLoader(train_ds, batch_size=16, shuffle=True, num_workers=2, collate_fn=train_ds.collate_fn)

Sample index: episode e contributes ``T_e - chunk_size + 1`` samples (t = 0 .. T_e - chunk_size), or ``T_e``
samples with ``cfg.pad_end`` (the chunk is padded with the episode's last action row and ``action_is_pad``
marks the padded rows). The index is built from episode metadata only; h5py files are opened lazily in the
process that reads them (each DataLoader worker opens its own handles; handles never cross a fork or a pickle),
and one sample reads only row t of each camera (and proprio) and rows t .. t+chunk-1 of the action key.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from envs.layout import CAMERA_TO_HDF5_KEY
from policies.normalization import NormStats
from train.config import DataConfig
from train.episodes import EpisodeDataError, EpisodeInfo, validate_episode_dir
from train.stats import PreparedData, prepare_data

NOISE_WORD_LENGTHS = (2, 7)
"""Letters in a random replacement word of :func:`noisy_instruction` (inclusive range)."""


def noisy_instruction(text: str, p: float, rng: np.random.Generator) -> str:
    """``text`` with each whitespace-separated word replaced, with probability ``p``, by a random lowercase string of
    2-7 letters: word dropout (Bowman et al. 2016, "Generating Sentences from a Continuous Space", replace words by
    UNK) with an unknown word instead of an UNK token, because a tiny model's byte-level BPE has no UNK: it splits
    an unseen word (and such a string) into letter tokens that no seen phrasing trained. ``p = 0`` returns ``text``.
    Draws from ``rng`` only (deterministic per generator state)."""
    if p <= 0:
        return text
    words = text.split()
    hit = rng.random(len(words)) < p
    lo, hi = NOISE_WORD_LENGTHS
    for i in np.flatnonzero(hit):
        letters = rng.integers(ord("a"), ord("z") + 1, size=int(rng.integers(lo, hi + 1)))
        words[i] = "".join(map(chr, letters))
    return " ".join(words)


def next_keyposes(actions: np.ndarray, norm_stats: NormStats | None, cfg: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    """Each arm's next keypose for every step of one episode: the x, y, z of the action row at which that arm's
    gripper command next turns closed (< 0 after >= 0, or < 0 at step 0), at or after the step. Keyframes from
    gripper-state changes as in PerAct (Shridhar et al. 2022, "Perceiver-Actor", keyframe discovery).

    Args:
        actions: (T, 14) absolute actions (``envs.layout.ACTION_LAYOUT``; gripper +1 open, -1 closed).
        norm_stats: the run's statistics (None: raw metres); rows are normalized as the action targets are.
        cfg: the run's data config (``norm_mode``).

    Returns:
        (T, 2, 3) float32 keyposes (left arm, right arm; x, y, z) and (T, 2) bool: False where that arm closes no
        more in the episode (its keypose is then zeros, and masked out of the loss).
    """
    from envs.layout import ACTION_LAYOUT

    rows = norm_stats.action.normalize(actions, cfg.norm_mode) if norm_stats is not None else actions
    poses = np.zeros((len(actions), 2, 3), dtype=np.float32)
    valid = np.zeros((len(actions), 2), dtype=bool)
    for a, arm in enumerate(("left", "right")):
        dims = [ACTION_LAYOUT.index(f"{arm}_{axis}") for axis in ("x", "y", "z")]
        closed = actions[:, ACTION_LAYOUT.index(f"{arm}_gripper")] < 0
        onsets = np.flatnonzero(closed & ~np.concatenate([[False], closed[:-1]]))
        nxt = np.searchsorted(onsets, np.arange(len(actions)))  # first onset >= t
        ok = nxt < len(onsets)
        valid[:, a] = ok
        poses[ok, a] = rows[onsets[nxt[ok]]][:, dims]
    return poses, valid


Transform = Callable[[torch.Tensor, list[str]], Mapping[str, Any]]
"""``transform(images (B, V, H, W, 3) uint8 tensor, instructions list[str]) -> dict of model tensors``."""


def collate_samples(samples: Sequence[Mapping[str, Any]], transform: Transform | None = None) -> dict[str, Any]:
    """Stack samples of :class:`EpisodeDataset` into a batch, then apply ``transform`` if given.

    Returns:
        ``images`` (B, V, H, W, 3) uint8, ``actions`` (B, chunk, 14) float32, ``action_is_pad`` (B, chunk) bool,
        ``proprio`` (B, 14) float32, ``keypose`` (B, 2, 3) float32 and ``keypose_mask`` (B, 2) bool (when the
        samples have them), ``instruction`` list[str], ``episode_index`` and
        ``t`` (B,) int64 tensors. With ``transform``, ``images`` is replaced by the mapping
        ``transform(images, instructions)`` returns (e.g. pixel_values, input_ids, attention_mask), merged in.

    Raises:
        TypeError: ``transform`` returned something other than a mapping.
    """
    batch: dict[str, Any] = {
        "images": torch.from_numpy(np.stack([s["images"] for s in samples])),
        "actions": torch.from_numpy(np.stack([s["actions"] for s in samples])),
        "action_is_pad": torch.from_numpy(np.stack([s["action_is_pad"] for s in samples])),
        "instruction": [s["instruction"] for s in samples],
        "episode_index": torch.tensor([s["episode_index"] for s in samples], dtype=torch.int64),
        "t": torch.tensor([s["t"] for s in samples], dtype=torch.int64),
    }
    for key in ("proprio", "keypose", "keypose_mask"):
        if key in samples[0]:
            batch[key] = torch.from_numpy(np.stack([s[key] for s in samples]))
    if transform is not None:
        out = transform(batch.pop("images"), batch["instruction"])
        if not isinstance(out, Mapping):
            raise TypeError(f"transform must return a mapping of tensors, got {type(out).__name__}")
        batch.update(out)
    return batch


class EpisodeDataset(torch.utils.data.Dataset):
    """Samples ``(episode, t)`` of validated episodes; see the module docstring for the index and file handling.

    ``__getitem__(i)`` returns a dict:
        images: (V, H, W, 3) uint8, views in ``cfg.cameras`` order.
        actions: (chunk_size, 14) float32, rows t .. t+chunk-1 of ``cfg.action_key`` normalized with
            ``norm_stats.action`` in ``cfg.norm_mode`` (raw values when ``norm_stats`` is None).
        action_is_pad: (chunk_size,) bool, True for rows past the episode end (only with ``cfg.pad_end``).
        proprio: (14,) float32 row t, normalized with ``norm_stats.proprio`` (only when ``cfg.use_proprio``).
        instruction: ``cfg.constant_instruction`` if set, else a str drawn uniformly from the episode's
            ``cfg.instructions`` pool with
            ``np.random.default_rng([cfg.seed, epoch, i])``: the same (seed, epoch, i) always gives the same
            instruction, in any worker. With ``augment`` and ``cfg.instruction_word_noise`` > 0 it then goes
            through :func:`noisy_instruction` (generator ``[cfg.seed, epoch, i, 1]``, as deterministic). Call
            :meth:`set_epoch` before each epoch's iterator is created (with ``persistent_workers`` the workers keep
            the epoch they were started with).
        episode_index: int, the i of episode_{i}.hdf5; t: int, the step.
        keypose, keypose_mask: (2, 3) float32 and (2,) bool, only with ``cfg.keyposes``: :func:`next_keyposes`
            row t, normalized like the actions.
    """

    def __init__(
        self,
        cfg: DataConfig,
        episodes: Sequence[EpisodeInfo] | None = None,
        norm_stats: NormStats | None = None,
        transform: Transform | None = None,
        max_open_files: int = 64,
        augment: bool = False,
    ) -> None:
        """Build the sample index from metadata (no file is opened when ``episodes`` is given).

        Args:
            cfg: the data config (cameras, chunk_size, action_key, use_proprio, instructions, pad_end, norm_mode).
            episodes: validated episodes (e.g. ``PreparedData.train_episodes``); None validates ``cfg.data_dir``
                and uses all of them.
            norm_stats: statistics to normalize with (from :func:`train.stats.prepare_data` or a checkpoint).
            transform: applied per batch by :attr:`collate_fn`.
            max_open_files: per-process cap on open episode files (least recently used closed first).
            augment: apply the training-only augmentations of ``cfg`` (``instruction_word_noise``); False for
                validation.

        Raises:
            ValueError: no episodes or samples, an episode without a requested camera / proprio / instruction,
                or statistics of the wrong dimension or without proprio when ``cfg.use_proprio``.
        """
        self.cfg = cfg
        self.episodes: tuple[EpisodeInfo, ...] = tuple(
            validate_episode_dir(cfg).episodes if episodes is None else episodes
        )
        self.norm_stats = norm_stats
        self.transform = transform
        self.max_open_files = max(1, int(max_open_files))
        # A constant instruction carries nothing to drop, and the blind model meets it verbatim at inference.
        self.word_noise = float(cfg.instruction_word_noise) if augment and not cfg.constant_instruction else 0.0
        self.epoch = 0
        self._check_inputs()
        self._pools = [
            (cfg.constant_instruction,) if cfg.constant_instruction else e.instruction_pool(cfg.instructions)
            for e in self.episodes
        ]
        counts = np.array([e.num_samples(cfg.chunk_size, cfg.pad_end) for e in self.episodes], dtype=np.int64)
        self._ends = np.cumsum(counts)
        self._starts = self._ends - counts
        if self._ends[-1] == 0:
            raise ValueError(f"no samples: every episode is shorter than chunk_size {cfg.chunk_size} (set pad_end)")
        self._keys = [CAMERA_TO_HDF5_KEY[c] for c in cfg.cameras]
        self._pid: int | None = None
        self._open: OrderedDict[Path, Any] = OrderedDict()
        self._keyposes: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _check_inputs(self) -> None:
        cfg = self.cfg
        if not self.episodes:
            raise ValueError("EpisodeDataset: expected at least one episode, got none")
        for e in self.episodes:
            missing = [c for c in cfg.cameras if c not in e.image_shapes]
            if missing:
                raise ValueError(f"{e.path.name}: cameras {missing} not in the file (has {sorted(e.image_shapes)})")
            if cfg.use_proprio and not e.has_proprio:
                raise ValueError(f"{e.path.name}: use_proprio is set but the file has no 'proprio' dataset")
            if not e.instruction_pool(cfg.instructions):
                raise ValueError(f"{e.path.name}: no instruction in split {cfg.instructions!r}")
        if self.norm_stats is not None:
            if self.norm_stats.action.dim != self.episodes[0].action_min.shape[0]:
                raise ValueError(
                    f"norm_stats.action has {self.norm_stats.action.dim} dims, the actions have "
                    f"{self.episodes[0].action_min.shape[0]}"
                )
            if cfg.use_proprio and self.norm_stats.proprio is None:
                raise ValueError("use_proprio is set but norm_stats has no proprio statistics")

    def __len__(self) -> int:
        return int(self._ends[-1])

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch that seeds the per-sample instruction choice."""
        self.epoch = int(epoch)

    @property
    def collate_fn(self) -> Callable[[Sequence[Mapping[str, Any]]], dict[str, Any]]:
        """:func:`collate_samples` bound to this dataset's transform (picklable if the transform is)."""
        return functools.partial(collate_samples, transform=self.transform)

    def locate(self, index: int) -> tuple[int, int]:
        """Map a sample index to (position in ``self.episodes``, step t).

        Raises:
            IndexError: ``index`` outside [-len, len).
        """
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"sample index {index} out of range for {n} samples")
        index %= n
        pos = int(np.searchsorted(self._ends, index, side="right"))
        return pos, int(index - self._starts[pos])

    def _datasets(self, episode: EpisodeInfo) -> dict[str, Any]:
        """h5py datasets of ``episode``, opened lazily in this process (fresh handles after a fork)."""
        import h5py

        if self._pid != os.getpid():  # a forked worker: never touch the parent's handles
            self._open = OrderedDict()
            self._pid = os.getpid()
        handles = self._open.get(episode.path)
        if handles is None:
            f = h5py.File(episode.path, "r")
            keys = [*self._keys, self.cfg.action_key] + (["proprio"] if self.cfg.use_proprio else [])
            handles = {"__file__": f, **{k: f[k] for k in keys}}
            self._open[episode.path] = handles
            while len(self._open) > self.max_open_files:
                _, old = self._open.popitem(last=False)
                old["__file__"].close()
        else:
            self._open.move_to_end(episode.path)
        return handles

    def __getitem__(self, index: int) -> dict[str, Any]:
        pos, t = self.locate(index)
        try:
            return self._read_sample(index, pos, t)
        except (OSError, ValueError) as err:  # h5py read errors carry no file name: add file and step
            raise EpisodeDataError(
                f"{self.episodes[pos].path}: reading step {t} failed ({' '.join(str(err).split())[:300]}); "
                "`vla data check DIR --deep` lists every unreadable frame"
            ) from None

    def _read_sample(self, index: int, pos: int, t: int) -> dict[str, Any]:
        episode, cfg = self.episodes[pos], self.cfg
        ds = self._datasets(episode)
        images = np.stack([ds[k][t] for k in self._keys])  # (V, H, W, 3) uint8, one row per camera
        end = min(t + cfg.chunk_size, episode.num_steps)
        actions = np.asarray(ds[cfg.action_key][t:end], dtype=np.float32)  # (end - t, 14)
        n_pad = cfg.chunk_size - (end - t)
        if n_pad:  # hold the last action past the episode end
            actions = np.concatenate([actions, np.repeat(actions[-1:], n_pad, axis=0)], axis=0)
        if self.norm_stats is not None:
            actions = self.norm_stats.action.normalize(actions, cfg.norm_mode)
        pool = self._pools[pos]
        choice = (
            0
            if len(pool) == 1
            else int(np.random.default_rng([cfg.seed, self.epoch, index % len(self)]).integers(len(pool)))
        )
        instruction = pool[choice]
        if self.word_noise:
            rng = np.random.default_rng([cfg.seed, self.epoch, index % len(self), 1])
            instruction = noisy_instruction(instruction, self.word_noise, rng)
        sample = {
            "images": images,
            "actions": actions.astype(np.float32),
            "action_is_pad": np.arange(cfg.chunk_size) >= (end - t),
            "instruction": instruction,
            "episode_index": episode.index,
            "t": t,
        }
        if cfg.keyposes:
            if pos not in self._keyposes:  # once per episode: the whole (T, 14) action array is small
                self._keyposes[pos] = next_keyposes(np.asarray(ds["action"][:], dtype=np.float32), self.norm_stats, cfg)
            poses, valid = self._keyposes[pos]
            sample["keypose"], sample["keypose_mask"] = poses[t], valid[t]
        if cfg.use_proprio:
            proprio = np.asarray(ds["proprio"][t], dtype=np.float32)
            if self.norm_stats is not None:
                proprio = self.norm_stats.proprio.normalize(proprio, cfg.norm_mode)
            sample["proprio"] = proprio.astype(np.float32)
        return sample

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_open"], state["_pid"] = OrderedDict(), None  # h5py handles never travel in a pickle
        return state

    def close(self) -> None:
        """Close the episode files this process opened."""
        if self._pid == os.getpid():
            for handles in self._open.values():
                handles["__file__"].close()
        self._open = OrderedDict()


@dataclasses.dataclass
class DataBundle:
    """What :func:`build_datasets` returns: the prepared data and the datasets built on it (val may be None)."""

    prepared: PreparedData
    train: EpisodeDataset
    val: EpisodeDataset | None


def build_datasets(
    cfg: DataConfig,
    transform: Transform | None = None,
    val_transform: Transform | None = None,
    stats_path: str | Path | None = None,
) -> DataBundle:
    """Validate, split, compute (and optionally save) statistics, and build the train / val datasets.

    Raises:
        EpisodeDataError: invalid data or split; nothing is written in that case.
    """
    prepared = prepare_data(cfg, stats_path=stats_path)
    train = EpisodeDataset(cfg, prepared.train_episodes, prepared.norm_stats, transform=transform)
    val = None
    if prepared.val_episodes:
        val = EpisodeDataset(cfg, prepared.val_episodes, prepared.norm_stats, transform=val_transform)
    return DataBundle(prepared=prepared, train=train, val=val)
