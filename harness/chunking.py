"""Chunk execution: turning a policy's (B, H, A) action chunks into one (B, A) action per control step.

Two modes, chosen per run (``vla bench --n-action-steps`` / ``--temporal-ensemble-coeff``):

* **Open loop, k of H** (``n_action_steps = k``, default k = H): query the policy, execute the first k actions
  of the chunk one per step, query again. An episode of T steps makes exactly ``ceil(T / k)`` policy calls
  (as lerobot's ``n_action_steps`` and openpi's ``ActionChunkBroker``).
* **Temporal ensembling** (``temporal_ensemble_coeff = m``; ACT, Zhao et al. 2023, "Learning Fine-Grained
  Bimanual Manipulation with Low-Cost Hardware", Sec. 3.3, and ``imitate_episodes.py`` of the ACT repo): query
  the policy at every step; the action executed at step t is the weighted mean of every chunk's prediction for
  step t, with weights ``w_i = exp(-m * i)`` where i = 0 is the OLDEST prediction (ACT's convention), normalised
  to sum to 1. An episode of T steps makes exactly T policy calls. ACT uses m = 0.01.

The executor holds per-episode state; :meth:`ChunkExecutor.reset` must be called before every episode (the
runner does it together with ``policy.reset()``).
"""

from __future__ import annotations

import collections
import time
from typing import Any

import numpy as np


def ensemble_weights(num: int, coeff: float) -> np.ndarray:
    """ACT temporal-ensembling weights for ``num`` overlapping predictions, oldest first: exp(-coeff * i) / sum.

    Returns:
        (num,) float64 summing to 1.
    """
    if num < 1:
        raise ValueError(f"ensemble_weights: need at least one prediction, got {num}")
    w = np.exp(-coeff * np.arange(num, dtype=np.float64))
    return w / w.sum()


class ChunkExecutor:
    """Executes a chunking policy one control step at a time.

    Args:
        chunk_size: H, the policy's ``metadata.chunk_size``; every chunk must have exactly H actions.
        n_action_steps: k in [1, H]: actions executed per policy call in open-loop mode (default H).
        temporal_ensemble_coeff: m >= 0 enables temporal ensembling (then n_action_steps must be 1 or None).
        action_dim: A, the action size every chunk must have.

    Raises:
        ValueError: an out-of-range or contradictory setting (the message names the field and value).
    """

    def __init__(
        self,
        chunk_size: int,
        n_action_steps: int | None = None,
        temporal_ensemble_coeff: float | None = None,
        action_dim: int = 14,
    ):
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        k = chunk_size if n_action_steps is None else int(n_action_steps)
        if temporal_ensemble_coeff is not None:
            if temporal_ensemble_coeff < 0:
                raise ValueError(f"temporal_ensemble_coeff must be >= 0, got {temporal_ensemble_coeff}")
            if n_action_steps not in (None, 1):
                raise ValueError(
                    f"temporal ensembling queries the policy every step: n_action_steps must be 1 or unset, "
                    f"got {n_action_steps}"
                )
            k = 1
        if not 1 <= k <= chunk_size:
            raise ValueError(f"n_action_steps must be in [1, chunk_size={chunk_size}], got {n_action_steps}")
        self.chunk_size = int(chunk_size)
        self.n_action_steps = k
        self.temporal_ensemble_coeff = temporal_ensemble_coeff
        self.action_dim = int(action_dim)
        self.reset()

    def reset(self) -> None:
        """Forget every chunk and zero the counters (call before each episode)."""
        self._queue: collections.deque[np.ndarray] = collections.deque()
        self._chunks: collections.deque[tuple[int, np.ndarray]] = collections.deque()  # (start step, (B, H, A))
        self._t = 0
        self.policy_calls = 0
        self.last_inference_s: float | None = None
        """Seconds the policy call of the last :meth:`act` took; None when that step made no call."""

    def act(self, policy: Any, obs: Any) -> np.ndarray:
        """Return the (B, A) float32 action for the current step, calling ``policy.predict_action_chunk(obs)``
        when the mode requires it.

        ``obs`` is the current Observation, or a zero-argument callable that builds it: the callable is called
        only on steps that query the policy (so the harness renders the policy's cameras only then), and outside
        the inference timer.

        Raises:
            ValueError: the policy returned a chunk of the wrong shape or a non-float dtype (never padded or
                truncated).
        """
        self.last_inference_s = None
        if self.temporal_ensemble_coeff is None:
            if not self._queue:
                chunk = self._predict(policy, obs)
                self._queue.extend(chunk[:, i] for i in range(self.n_action_steps))
            action = self._queue.popleft()
        else:
            self._chunks.append((self._t, self._predict(policy, obs)))
            while self._chunks and self._chunks[0][0] + self.chunk_size <= self._t:
                self._chunks.popleft()  # this chunk has no prediction for step t any more
            preds = np.stack([c[:, self._t - start] for start, c in self._chunks])  # (N, B, A), oldest first
            w = ensemble_weights(len(preds), self.temporal_ensemble_coeff)
            action = np.einsum("n,nba->ba", w, preds.astype(np.float64)).astype(np.float32)
        self._t += 1
        return action

    def _predict(self, policy: Any, obs: Any) -> np.ndarray:
        if callable(obs):
            obs = obs()
        t0 = time.perf_counter()
        chunk = policy.predict_action_chunk(obs)
        self.last_inference_s = time.perf_counter() - t0
        self.policy_calls += 1
        chunk = np.asarray(chunk)
        batch = int(np.shape(obs.proprio)[0])
        expected = (batch, self.chunk_size, self.action_dim)
        if chunk.shape != expected:
            raise ValueError(
                f"policy returned an action chunk of shape {chunk.shape}, expected (B, H, A) = {expected} "
                f"(B from the observation, H = metadata.chunk_size, A = action_dim)"
            )
        if chunk.dtype.kind != "f":
            raise ValueError(f"policy returned an action chunk of dtype {chunk.dtype}, expected float32")
        return chunk.astype(np.float32, copy=False)
