"""Deterministic, exactly resumable sample order for training (one process or DDP).

Order (documented contract; checkpoints store the position in it):
    * epoch e visits ``np.random.default_rng([seed, e]).permutation(N)`` of the N training samples; with per-sample
      probabilities ``weights`` (per-task sampling weights, ``train.stats.sample_weights``) it visits
      ``default_rng([seed, e]).choice(N, size=N, p=weights)`` instead (N draws with replacement);
    * that permutation is cut into ``B_e = N // (batch_size * world_size)`` rounds of ``world_size`` micro-batches
      (the tail that does not fill a round is dropped, i.e. drop_last); in round i process r takes
      ``perm[(i * world_size + r) * batch_size : ... + batch_size]``;
    * every process counts the same global micro-batch index m = e * B_e + i, which after ``step`` optimizer
      steps is ``step * grad_accum``. Resuming at m reproduces the remaining order exactly.
Per-sample instruction choice (``EpisodeDataset.set_epoch``) and train-time augmentation
(:func:`augmentation_generator`) are functions of (seed, epoch, index) / (seed, rank, m) as well, so nothing
depends on the global RNG or on how many DataLoader workers read the files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np


class ResumableBatchSampler:
    """Per-process micro-batches of sample indices in the order described in the module docstring.

    Args:
        num_samples: N, samples in the training dataset.
        batch_size: samples per micro-batch per process.
        seed: seed of the per-epoch permutations.
        rank, world_size: this process and the number of processes.
        weights: optional (N,) sampling probabilities (summing to 1).

    Raises:
        ValueError: fewer samples than one round (batch_size * world_size), a bad rank, or weights of another
            length than N.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        weights: np.ndarray | None = None,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside [0, world_size={world_size})")
        per_round = batch_size * world_size
        if num_samples < per_round:
            raise ValueError(
                f"{num_samples} training samples cannot fill one global batch of batch_size {batch_size}"
                f" x {world_size} process(es) = {per_round}; lower --batch-size or add episodes"
            )
        self.num_samples, self.batch_size, self.seed = int(num_samples), int(batch_size), int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.batches_per_epoch = num_samples // per_round
        if weights is not None and np.shape(weights) != (num_samples,):
            raise ValueError(f"weights must have shape ({num_samples},), got {np.shape(weights)}")
        self.weights = None if weights is None else np.asarray(weights, dtype=np.float64)

    def position(self, micro_batch: int) -> tuple[int, int]:
        """(epoch, micro-batch within the epoch) of global micro-batch index ``micro_batch``."""
        return divmod(int(micro_batch), self.batches_per_epoch)

    def epoch_batches(self, epoch: int, start: int = 0) -> list[list[int]]:
        """This process's micro-batches of ``epoch`` from ``start`` on (lists of ``batch_size`` indices)."""
        rng = np.random.default_rng([self.seed, int(epoch)])
        if self.weights is None:
            perm = rng.permutation(self.num_samples)
        else:
            perm = rng.choice(self.num_samples, size=self.num_samples, p=self.weights)
        out = []
        for i in range(start, self.batches_per_epoch):
            lo = (i * self.world_size + self.rank) * self.batch_size
            out.append(perm[lo : lo + self.batch_size].tolist())
        return out


def iterate_batches(
    dataset: Any, sampler: ResumableBatchSampler, start: int, make_loader: Callable[[Any, list[list[int]]], Any]
) -> Iterator[tuple[int, dict]]:
    """Endless ``(micro-batch index, batch)`` pairs from global micro-batch index ``start`` on.

    One DataLoader per epoch (``make_loader(dataset, batches)``), created after ``dataset.set_epoch(epoch)`` so
    that its workers see the epoch's instruction choice.
    """
    from train.episodes import EpisodeDataError

    m = int(start)
    while True:
        epoch, i = sampler.position(m)
        dataset.set_epoch(epoch)
        try:
            for batch in make_loader(dataset, sampler.epoch_batches(epoch, i)):
                yield m, batch
                m += 1
        except EpisodeDataError as err:  # from a worker: its message only, not torch's wrapping
            raise EpisodeDataError.unwrap(err) from None


def augmentation_generator(seed: int, rank: int, micro_batch: int):
    """``torch.Generator`` for the train-time augmentation of one micro-batch, seeded from (seed, rank, m)."""
    import torch

    state = np.random.SeedSequence([int(seed), int(rank), int(micro_batch)]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)


def validation_batches(
    num_samples: int, batch_size: int, num_batches: int, seed: int, rank: int = 0, world_size: int = 1
) -> list[list[int]]:
    """The fixed validation batches of this process: the first ``num_batches`` batches of a seeded permutation
    (``default_rng([seed, -1 mod 2**32])``, spanning all val episodes), batch j going to process j % world_size.
    The last batch may be short when the val set is small; never empty."""
    perm = np.random.default_rng([int(seed), 2**32 - 1]).permutation(num_samples)
    batches = [perm[i : i + batch_size].tolist() for i in range(0, num_samples, batch_size)][:num_batches]
    return [b for j, b in enumerate(batches) if j % world_size == rank]
