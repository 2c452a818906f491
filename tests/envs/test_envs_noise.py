"""DART-style action noise of the demo recorder (no simulator)."""

from __future__ import annotations

import numpy as np
import pytest

from envs.config import DemosConfig
from envs.recording import ActionNoise


def test_noise_has_the_requested_std_correlation_and_spares_grippers():
    noise = ActionNoise(std=0.01, rho=0.9, seed=3)
    clean = np.zeros(14)
    offsets = np.array([noise(clean) for _ in range(20000)])
    for dim in (0, 1, 2, 7, 8, 9):
        assert offsets[:, dim].std() == pytest.approx(0.01, rel=0.1)
        lag1 = np.corrcoef(offsets[:-1, dim], offsets[1:, dim])[0, 1]
        assert lag1 == pytest.approx(0.9, abs=0.02)
    assert offsets[:, 5].std() == pytest.approx(0.05, rel=0.1)  # yaw: 5 x std in rad
    assert np.all(offsets[:, [3, 4, 6, 10, 11, 13]] == 0.0), "roll, pitch and grippers are never perturbed"


def test_noise_is_deterministic_per_episode_seed():
    a = [ActionNoise(0.01, 0.9, seed=7)(np.zeros(14)) for _ in range(1)]
    b = [ActionNoise(0.01, 0.9, seed=7)(np.zeros(14)) for _ in range(1)]
    c = [ActionNoise(0.01, 0.9, seed=8)(np.zeros(14)) for _ in range(1)]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize(
    "kwargs, message", [({"action_noise": 0.2}, "action_noise"), ({"noise_correlation": 1.0}, "noise_correlation")]
)
def test_noise_settings_are_validated(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        DemosConfig(task="DualArmLiftBar-v1", episodes=1, out=tmp_path, **kwargs)
