"""Chunk execution: exact policy-call counts, which chunk row runs when, and temporal ensembling by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from fakes import CountingPolicy

from harness.chunking import ChunkExecutor, ensemble_weights
from policies.base import Observation


def _obs(batch: int = 2) -> Observation:
    return Observation(images={}, proprio=np.zeros((batch, 14), np.float32), instruction=["x"] * batch)


def _run(executor: ChunkExecutor, policy: CountingPolicy, steps: int, batch: int = 2) -> np.ndarray:
    executor.reset()
    policy.reset()
    return np.stack([executor.act(policy, _obs(batch)) for _ in range(steps)])  # (T, B, 14)


@pytest.mark.parametrize("k", [1, 2, 3, 4])
@pytest.mark.parametrize("steps", [1, 7, 8, 9])
def test_open_loop_calls_and_rows(k: int, steps: int) -> None:
    policy = CountingPolicy(chunk_size=4)
    ex = ChunkExecutor(chunk_size=4, n_action_steps=k)
    actions = _run(ex, policy, steps)
    assert ex.policy_calls == math.ceil(steps / k), f"k={k}, T={steps}: {ex.policy_calls} calls"
    expected = np.array([1000 * (t // k) + t % k for t in range(steps)], np.float32)  # call t//k, row t%k
    np.testing.assert_array_equal(actions[:, 0, 0], expected)
    np.testing.assert_array_equal(actions[:, 1, 0], expected)  # every batch row follows the same schedule
    assert actions.dtype == np.float32


def test_default_n_action_steps_is_whole_chunk_and_reset_restarts() -> None:
    policy = CountingPolicy(chunk_size=5)
    ex = ChunkExecutor(chunk_size=5)
    _run(ex, policy, 12)
    assert ex.n_action_steps == 5 and ex.policy_calls == 3
    _run(ex, policy, 2)  # reset() must drop the queued rest of the last chunk
    assert ex.policy_calls == 1


def test_last_inference_only_on_call_steps() -> None:
    policy = CountingPolicy(chunk_size=3)
    ex = ChunkExecutor(chunk_size=3)
    called = []
    for _ in range(6):
        ex.act(policy, _obs())
        called.append(ex.last_inference_s is not None)
    assert called == [True, False, False, True, False, False]


def test_ensemble_weights_oldest_first() -> None:
    w = ensemble_weights(3, 0.5)
    raw = np.array([1.0, math.exp(-0.5), math.exp(-1.0)])
    np.testing.assert_allclose(w, raw / raw.sum())
    np.testing.assert_allclose(ensemble_weights(4, 0.0), [0.25] * 4)


def test_temporal_ensembling_against_hand_computation() -> None:
    m, h = 0.5, 3
    policy = CountingPolicy(chunk_size=h)  # chunk of call c, row r = 1000 c + r
    ex = ChunkExecutor(chunk_size=h, temporal_ensemble_coeff=m)
    actions = _run(ex, policy, 5)[:, 0, 0].astype(np.float64)
    e1, e2 = math.exp(-m), math.exp(-2 * m)
    expected = [
        0.0,  # t=0: only call 0, row 0
        (1 * 1 + e1 * 1000) / (1 + e1),  # t=1: call 0 row 1 (oldest, weight 1), call 1 row 0
        (1 * 2 + e1 * 1001 + e2 * 2000) / (1 + e1 + e2),  # t=2: calls 0, 1, 2
        (1 * 1002 + e1 * 2001 + e2 * 3000) / (1 + e1 + e2),  # t=3: call 0 no longer covers step 3
        (1 * 2002 + e1 * 3001 + e2 * 4000) / (1 + e1 + e2),
    ]
    np.testing.assert_allclose(actions, expected, rtol=1e-6)
    assert ex.policy_calls == 5, "temporal ensembling queries the policy at every step"


def test_temporal_ensembling_changes_the_executed_action() -> None:
    steps = 6
    plain = _run(ChunkExecutor(chunk_size=4, n_action_steps=1), CountingPolicy(4), steps)
    ens = _run(ChunkExecutor(chunk_size=4, temporal_ensemble_coeff=0.01), CountingPolicy(4), steps)
    assert np.array_equal(plain[0], ens[0]), "step 0 has one prediction: nothing to ensemble"
    assert not np.allclose(plain[1:, :, 0], ens[1:, :, 0]), "ensembling must change executed actions"


def test_bad_chunks_and_settings_raise() -> None:
    ex = ChunkExecutor(chunk_size=4)
    with pytest.raises(ValueError, match=r"expected \(B, H, A\) = \(2, 4, 14\)"):
        ex.act(CountingPolicy(chunk_size=3), _obs())  # H=3 from a policy that declared 4: never padded

    class IntPolicy(CountingPolicy):
        def predict_action_chunk(self, obs):
            return super().predict_action_chunk(obs).astype(np.int64)

    with pytest.raises(ValueError, match="dtype int64"):
        ChunkExecutor(chunk_size=4).act(IntPolicy(4), _obs())
    with pytest.raises(ValueError, match="n_action_steps must be in"):
        ChunkExecutor(chunk_size=4, n_action_steps=5)
    with pytest.raises(ValueError, match="n_action_steps must be 1 or unset"):
        ChunkExecutor(chunk_size=4, n_action_steps=2, temporal_ensemble_coeff=0.01)
    with pytest.raises(ValueError, match="temporal_ensemble_coeff must be >= 0"):
        ChunkExecutor(chunk_size=4, temporal_ensemble_coeff=-1.0)
