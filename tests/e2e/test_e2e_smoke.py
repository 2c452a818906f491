"""CI smoke rollout, end to end through the `vla` command as users run it (real ManiSkill, lavapipe on CPU):

record 2 demos -> train a few steps -> `vla bench --benchmark smoke` for the scripted expert (gated with
--fail-under) and for the fresh checkpoint (must run to completion and write videos) -> `vla gallery`.

Set ``VLA_E2E_OUT=DIR`` to keep the outputs (CI uploads them); by default they go to pytest's tmp dir.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.maniskill, pytest.mark.render, pytest.mark.slow]

SMOKE_EPISODES = 12  # 6 tasks x 2 seeds (harness/specs/smoke.yaml)


def vla(*args: str, expect: int = 0) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "scripts.cli", *args], capture_output=True, text=True)
    assert proc.returncode == expect, (
        f"vla {' '.join(args)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return proc


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    keep = os.environ.get("VLA_E2E_OUT")
    if keep:
        path = Path(keep)
        path.mkdir(parents=True, exist_ok=True)
        for name in ("demos", "run", "smoke-scripted", "smoke-checkpoint"):
            if (path / name).exists():
                pytest.fail(f"{path / name} exists; VLA_E2E_OUT must point at a fresh folder")
        return path
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="module")
def checkpoint(root: Path) -> Path:
    vla(
        "demos",
        "--task",
        "DualArmLiftBar-v1",
        "--episodes",
        "2",
        "--out",
        str(root / "demos"),
        "--image-size",
        "64",
        "--cameras",
        "head,left_wrist",
        "--seed-start",
        "10000",
        "--no-progress",
    )
    vla(
        "train",
        "--data",
        str(root / "demos"),
        "--out",
        str(root / "run"),
        "--cameras",
        "head",
        "left_wrist",
        "--use-proprio",
        "--steps",
        "3",
        "--batch-size",
        "8",
        "--grad-accum",
        "2",
        "--save-every",
        "3",
        "--num-workers",
        "0",
        "--threads",
        "1",
        "--no-progress",
    )
    last = root / "run" / "checkpoints" / "last"
    assert last.is_symlink() and (last / "config.json").exists()
    return last


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]


def test_scripted_smoke_passes_the_gate_with_videos_and_gallery(root: Path):
    out = root / "smoke-scripted"
    vla(
        "bench",
        "--policy",
        "scripted",
        "--benchmark",
        "smoke",
        "--out",
        str(out),
        "--fail-under",
        "0.95",
        "--no-progress",
    )
    results = json.loads((out / "results.json").read_text())
    assert results["overall"]["success_rate"] >= 0.95
    assert len(_records(out)) == SMOKE_EPISODES
    videos = sorted((out / "videos").glob("*.mp4"))
    assert len(videos) == SMOKE_EPISODES and all(v.stat().st_size > 1000 for v in videos)
    vla("gallery", str(out))
    assert "DualArmPlaceShoe-v1" in (out / "index.html").read_text()


def test_fresh_checkpoint_runs_the_smoke_benchmark_to_completion(root: Path, checkpoint: Path):
    out = root / "smoke-checkpoint"
    vla("bench", "--policy", f"checkpoint:{checkpoint}", "--benchmark", "smoke", "--out", str(out), "--no-progress")
    records = _records(out)
    assert len(records) == SMOKE_EPISODES
    assert all(r["status"] == "ok" for r in records), [r["error"] for r in records if r["status"] != "ok"]
    assert all(r["policy_calls"] >= 1 for r in records)
    assert len(list((out / "videos").glob("*.mp4"))) == SMOKE_EPISODES
    results = json.loads((out / "results.json").read_text())
    assert results["provenance"]["checkpoint"]["sha256"]
    assert results["policy"]["cameras"] == ["head", "left_wrist"]
