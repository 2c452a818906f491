"""scripts/gpu_smoke.sh and benchmarks.bench_gpu without a GPU: the GPU job calls the script, the script skips
with exit 0 and says what it would measure, and the model part runs (tiny preset, CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[2]


def test_the_gpu_job_runs_the_smoke_script() -> None:
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "ci.yml").read_text())
    steps = workflow["jobs"]["gpu"]["steps"]
    assert any(step.get("run", "").strip() == "scripts/gpu_smoke.sh" for step in steps)
    assert "self-hosted" in workflow["jobs"]["gpu"]["runs-on"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this checks the no-GPU path")
def test_without_cuda_the_smoke_script_skips_and_writes_nothing(tmp_path: Path) -> None:
    gpu_json = tmp_path / "gpu.json"
    env = {**os.environ, "PY": sys.executable, "GPU_JSON": str(gpu_json), "OUT": str(tmp_path / "smoke")}
    done = subprocess.run(
        [str(REPO / "scripts" / "gpu_smoke.sh")], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "SKIPPED: no CUDA device" in done.stdout and "openvla-7b architecture" in done.stdout
    assert not gpu_json.exists() and not (tmp_path / "smoke").exists(), "no numbers without a GPU"


def test_the_model_part_runs_on_the_cpu_with_the_tiny_preset(tmp_path: Path) -> None:
    from benchmarks.bench_gpu import main

    out = tmp_path / "gpu.json"
    assert main(["--device", "cpu", "--preset", "tiny", "--repeats", "2", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    latency = result["chunk_latency"]
    assert latency["preset"] == "tiny" and latency["parameters"] > 1e6
    for batch in ("batch_1", "batch_16"):
        assert 0 < latency[batch]["median_ms"] <= latency[batch]["p90_ms"]
    assert "vectorized_rollouts" not in result, "the GPU simulator part runs only on CUDA"
    assert result["machine"]["cpu"] and "command" in result
