"""Render on demand: a camera is rendered only when its image is read, with the same pixels as an eager render."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = [pytest.mark.maniskill, pytest.mark.render]


@pytest.fixture(scope="module")
def env():
    from envs.wrapper import make_env

    env = make_env("DualArmLiftBar-v1", cameras=("head", "left_wrist"), image_size=32)
    yield env
    env.close()


def test_nothing_is_rendered_until_read_and_then_once(env):
    obs, _ = env.reset(seed=4)
    before = dict(env.render_counts)
    for _ in range(5):
        obs, *_ = env.step(obs["proprio"][0].astype(np.float64))
    assert dict(env.render_counts) == before, "steps whose images nobody read must not render"
    assert obs["images"].rendered == () and set(obs["images"]) == {"head", "left_wrist"}
    head = obs["images"]["head"]
    again = obs["images"]["head"]
    assert again is head and obs["images"].rendered == ("head",)
    assert env.render_counts["head"] == before.get("head", 0) + 1
    assert env.render_counts["left_wrist"] == before.get("left_wrist", 0)


def test_lazy_pixels_equal_an_eager_render_of_the_same_state(env):
    obs, _ = env.reset(seed=9)
    obs, *_ = env.step(obs["proprio"][0].astype(np.float64))
    eager = env.render_cameras()
    for camera in ("head", "left_wrist"):
        lazy = obs["images"][camera]
        assert lazy.shape == (1, 32, 32, 3) and lazy.dtype == np.uint8
        np.testing.assert_array_equal(lazy, eager[camera])


def test_reading_after_the_env_moved_on_or_an_unknown_camera_raises(env):
    obs, _ = env.reset(seed=1)
    stale = obs["images"]
    env.step(obs["proprio"][0].astype(np.float64))
    with pytest.raises(RuntimeError, match="read after the env moved on"):
        stale["head"]
    with pytest.raises(KeyError, match="'low' is not rendered by this env"):
        stale["low"]
