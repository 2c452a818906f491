"""A trained checkpoint as a Policy (`checkpoint:PATH`): metadata, units, normalization, no data access."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from trainer_fixtures import micro_config, write_dataset

from policies.base import Observation, make_policy


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from train.trainer import train

    root = tmp_path_factory.mktemp("ckpt_policy")
    data = write_dataset(root / "data")
    result = train(micro_config(data, root / "run", steps=2))
    moved = root / "moved"
    shutil.copytree(result.last_checkpoint, moved)
    shutil.rmtree(data)  # the policy must not need the training data
    return moved


def _obs(n: int = 2, seed: int = 0) -> Observation:
    rng = np.random.default_rng(seed)
    images = {c: rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8) for c in ("head", "left_wrist", "low")}
    return Observation(
        images=images, proprio=rng.normal(0, 0.1, (n, 14)).astype(np.float32), instruction=["pick up the cube"] * n
    )


def test_metadata_comes_from_the_checkpoint(trained):
    policy = make_policy(f"checkpoint:{trained}")
    meta = policy.metadata
    assert meta.cameras == ("head", "left_wrist") and meta.chunk_size == 4 and meta.image_size == 32
    assert meta.tasks == () and meta.extra["trained_tasks"] == ["LiftCube-v1"]  # recorded, not enforced
    assert meta.checkpoint_path == str(trained.resolve()) and len(meta.weights_digest) == 64


def test_chunk_is_the_unnormalized_model_output(trained):
    policy = make_policy(f"checkpoint:{trained}")
    obs = _obs()
    before = {k: v.copy() for k, v in obs.images.items()}, obs.proprio.copy()
    chunk = policy.predict_action_chunk(obs)
    assert chunk.shape == (2, 4, 14) and chunk.dtype == np.float32
    for k, v in before[0].items():
        np.testing.assert_array_equal(obs.images[k], v, err_msg="observation was mutated")
    np.testing.assert_array_equal(obs.proprio, before[1])
    # Recompute by hand: processor (eval) -> model -> unnormalize with the checkpoint's stats and mode.
    images = np.stack([obs.images["head"], obs.images["left_wrist"]], axis=1)
    inputs = policy.processor(images, list(obs.instruction), train=False)
    proprio = torch.from_numpy(policy.stats.proprio.normalize(obs.proprio, "bounds_q99"))
    with torch.inference_mode():
        norm = policy.model.predict_action_chunk(**inputs, proprio=proprio).numpy()
    expected = policy.stats.action.unnormalize(norm, "bounds_q99")
    expected[..., [6, 13]] = np.clip(expected[..., [6, 13]], -1, 1)
    np.testing.assert_allclose(chunk, expected, atol=1e-6)
    assert not np.allclose(chunk, norm), "actions must be in env units, not normalized"


def test_missing_camera_is_a_clear_error(trained):
    policy = make_policy(f"checkpoint:{trained}")
    obs = _obs()
    images = dict(obs.images)
    del images["left_wrist"]
    with pytest.raises(KeyError, match="left_wrist"):
        policy.predict_action_chunk(Observation(images=images, proprio=obs.proprio, instruction=obs.instruction))


def test_bad_path_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        make_policy(f"checkpoint:{tmp_path / 'nope'}")
