"""Episode videos: tiling, overlay frames, mp4 encoding, one uniquely named file per episode, --video modes."""

from __future__ import annotations

from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest

from harness.video import (
    EpisodeFrames,
    OverlayInfo,
    compose_frame,
    encode_episode,
    tile_cameras,
    video_name,
)


def test_video_name_and_bad_outcome() -> None:
    assert video_name("DualArmLiftBar-v1", 7, "success") == "DualArmLiftBar-v1--seed7--success.mp4"
    with pytest.raises(ValueError, match="outcome"):
        video_name("t", 1, "timeout")


def test_tile_cameras_side_by_side_in_order() -> None:
    head = np.full((8, 8, 3), 10, np.uint8)
    wrist = np.full((8, 6, 3), 200, np.uint8)
    tiled = tile_cameras({"head": head, "left_wrist": wrist}, ("left_wrist", "head"))
    assert tiled.shape == (8, 14, 3)
    assert (tiled[:, :6] == 200).all() and (tiled[:, 6:] == 10).all()
    with pytest.raises(ValueError, match="not among"):
        tile_cameras({"head": head}, ("head", "low"))
    with pytest.raises(ValueError, match="height"):
        tile_cameras({"head": head, "low": np.zeros((4, 8, 3), np.uint8)}, ("head", "low"))


def test_compose_frame_upscales_adds_text_and_is_even() -> None:
    info = OverlayInfo("DualArmLiftBar-v1", 3, "lift the bar with both arms and keep it level please", 150)
    frame = compose_frame(np.zeros((33, 33, 3), np.uint8), info, step=5, success=True)
    assert frame.dtype == np.uint8 and frame.shape[0] % 2 == 0 and frame.shape[1] % 2 == 0
    assert frame.shape[1] >= 256, "small images are upscaled for legibility"
    assert frame[:264].max() == 0 and frame[264:].max() > 0, "image untouched, text drawn in the band below"
    green = frame[264:, :, 1].astype(int) - frame[264:, :, 0].astype(int)
    assert green.max() > 100, "the SUCCESS flag is drawn in green"


def test_encode_episode_round_trip(tmp_path: Path) -> None:
    info = OverlayInfo("t", 1, "do it", 10)
    frames = EpisodeFrames(info, ("head",))
    for step in range(6):
        frames.add({"head": np.full((1, 32, 32, 3), step * 40, np.uint8)}, 0, step, step >= 4)
    path = encode_episode(frames, tmp_path / "videos" / "t--seed1--success.mp4")
    assert path.exists() and not any((tmp_path / "videos" / ".partial").iterdir())
    read = imageio.mimread(path)
    assert len(read) == 6 and read[0].shape[1] == 256
    assert read[5][:200].mean() > read[0][:200].mean() + 100, "frames keep their order"


@pytest.mark.parametrize("mode", ["all", "failures", "none"])
def test_runner_writes_one_video_per_episode(tmp_path: Path, run_fake, mode: str) -> None:
    out = tmp_path / "o"
    _, records, results = run_fake(
        out, env_kw={"fail_seeds": (4,)}, tasks=("DualArmLiftBar-v1",), seeds="0:6", video=mode, max_episode_steps=20
    )
    assert results["config"]["resolved"]["cameras"] == (["head"] if mode != "none" else [])
    videos = sorted(p.name for p in (out / "videos").glob("*.mp4")) if (out / "videos").exists() else []
    outcome = {0: "success", 1: "success", 2: "failure", 3: "success", 4: "error", 5: "failure"}
    keep = {"all": set(outcome.values()), "failures": {"failure", "error"}, "none": set()}[mode]
    expected = sorted(f"DualArmLiftBar-v1--seed{s}--{o}.mp4" for s, o in outcome.items() if o in keep)
    assert videos == expected
    for r in records:
        name = f"DualArmLiftBar-v1--seed{r['seed']}--{outcome[r['seed']]}.mp4"
        assert r["video"] == (f"videos/{name}" if name in expected else None)
    if mode == "all":
        error_video = imageio.mimread(out / "videos" / "DualArmLiftBar-v1--seed4--error.mp4")
        assert len(error_video) == 3, "frames up to the failing step: reset + 2 steps"
        ok = next(r for r in records if r["seed"] == 0)
        assert len(imageio.mimread(out / "videos" / "DualArmLiftBar-v1--seed0--success.mp4")) == ok["episode_len"] + 1
