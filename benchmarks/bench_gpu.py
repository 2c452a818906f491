"""The GPU runner's measurements -> benchmarks/results/gpu.json (run by ``scripts/gpu_smoke.sh``).

    .venv/bin/python -m benchmarks.bench_gpu [--out benchmarks/results/gpu.json]

1. **Model**: the openvla-7b architecture (DINOv2 ViT-L + SigLIP So400m, Llama-2 7B, OFT L1 head; random init,
   bfloat16, on the GPU) predicting one 8 x 14 action chunk from 2 views of 224 px + proprio (batch 1 and 16):
   median / p90 latency over ``--repeats`` calls after warm-up (``torch.cuda.synchronize`` around each), peak
   memory (``torch.cuda.max_memory_allocated``) and the parameter count.
2. **Vectorized rollouts**: a tiny VLA trained for a few steps on 2 recorded demos (its actions are poor; this
   measures the machinery), benchmarked with ManiSkill's GPU simulator (``--sim-backend physx_cuda --num-envs
   16``: one batched policy call per step for 16 sub-envs) with a video per episode; the check is that every
   episode has its own record and its own video (split from the batch), plus episodes/hour.
3. ``vla doctor``'s report.

Needs CUDA: without it prints what it would measure and exits 0 (``--device cpu --preset tiny`` runs part 1 on
the CPU with the tiny preset, as the tests do). Budget: under 10 minutes on one GPU.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Literal

from benchmarks.common import record_demo_data, result_header, vla_command, write_result

RESULTS = Path(__file__).resolve().parent / "results" / "gpu.json"
TASK = "DualArmLiftBar-v1"
PLAN = (
    "openvla-7b architecture (random init, bf16): chunk latency and peak memory, 2 views x 224 px + proprio, "
    "batch 1 and 16; vla bench with --sim-backend physx_cuda --num-envs 16 (batched checkpoint inference, one "
    "video per episode): episodes/hour; vla doctor"
)


@dataclasses.dataclass
class GpuBenchConfig:
    """GPU benchmark settings."""

    out: Path = RESULTS
    """Output JSON."""
    device: Literal["cuda", "cpu"] = "cuda"
    """Device of the model part (cpu: a dry run of part 1 only, with --preset tiny)."""
    preset: Literal["openvla-7b", "tiny"] = "openvla-7b"
    """Model preset of part 1."""
    repeats: int = 20
    """Timed chunk predictions per batch size."""
    num_envs: int = 16
    """Sub-environments of the vectorized rollout (part 2)."""
    episodes: int = 32
    """Episodes of the vectorized rollout (seeds 100000..)."""

    def __post_init__(self) -> None:
        if self.repeats < 1 or self.num_envs < 1 or self.episodes < 1:
            raise ValueError(
                f"repeats, num_envs, episodes must be >= 1, got {self.repeats, self.num_envs, self.episodes}"
            )


def chunk_latency(cfg: GpuBenchConfig) -> dict:
    """Part 1: the preset's chunk latency (ms) and peak memory (GiB) at batch 1 and 16."""
    import torch

    from policies.openvla.config import preset
    from policies.openvla.lora import count_parameters
    from policies.openvla.model import VLA

    vcfg = preset(cfg.preset, cameras=("head", "left_wrist"), action_head="l1", proprio_dim=14)
    dtype = torch.bfloat16 if cfg.device == "cuda" else torch.float32
    torch.manual_seed(0)
    t = time.perf_counter()
    with torch.device(cfg.device):
        model = VLA(vcfg).to(dtype).eval()
    build_s = time.perf_counter() - t
    _, params = count_parameters(model)
    sync = torch.cuda.synchronize if cfg.device == "cuda" else (lambda: None)
    rows = {}
    for batch in (1, 16):
        side = vcfg.image_size
        pixels = torch.randn(batch, len(vcfg.cameras) * vcfg.channels_per_view, side, side, device=cfg.device)
        ids = torch.randint(3, vcfg.llm.vocab_size - vcfg.n_action_bins, (batch, 24), device=cfg.device)
        ids[:, 0] = vcfg.llm.bos_token_id
        mask = torch.ones_like(ids)
        proprio = torch.zeros(batch, 14, device=cfg.device, dtype=dtype)
        if cfg.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        times = []
        with torch.inference_mode():
            for i in range(cfg.repeats + 3):
                sync()
                t = time.perf_counter()
                chunk = model.predict_action_chunk(pixels.to(dtype), ids, mask, proprio)
                sync()
                if i >= 3:
                    times.append(1000 * (time.perf_counter() - t))
        if tuple(chunk.shape) != (batch, 8, 14):
            raise RuntimeError(f"unexpected chunk shape {tuple(chunk.shape)}")
        times.sort()
        rows[f"batch_{batch}"] = {
            "median_ms": round(statistics.median(times), 2),
            "p90_ms": round(times[math.ceil(0.9 * len(times)) - 1], 2),
            "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cfg.device == "cuda" else None,
        }
    return {"preset": cfg.preset, "dtype": str(dtype), "parameters": params, "build_s": round(build_s, 1), **rows}


def vectorized_rollouts(cfg: GpuBenchConfig, root: Path) -> dict:
    """Part 2: a tiny checkpoint benchmarked on the GPU simulator with num_envs sub-envs and videos."""
    recipe = Path(__file__).resolve().parent / "recipes" / "tiny-liftbar.yaml"
    data, run, out = root / "data", root / "run", root / "bench"
    record_demo_data(data, 2, TASK)
    train = ["train", "--config", str(recipe), "--data", str(data), "--out", str(run), "--steps", "20"]
    subprocess.run(vla_command(*train, "--val-fraction", "0", "--no-progress"), check=True, capture_output=True)
    args = ["bench", "--policy", f"checkpoint:{run / 'checkpoints' / 'last'}", "--tasks", TASK]
    args += ["--seeds", f"100000:{100000 + cfg.episodes}", "--out", str(out), "--sim-backend", "physx_cuda"]
    args += ["--num-envs", str(cfg.num_envs), "--video", "all", "--no-progress"]
    subprocess.run(vla_command(*args), check=True, capture_output=True)
    results = json.loads((out / "results.json").read_text())
    records = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    videos = [r["video"] for r in records if r.get("video")]
    return {
        "command": "vla " + " ".join(args),
        "episodes": len(records),
        "unique_episodes": len({(r["task"], r["seed"]) for r in records}),
        "videos": len(videos),
        "videos_on_disk": sum((out / v).exists() for v in videos),
        "episodes_per_hour": results["throughput"]["episodes_per_hour"],
        "statuses": sorted({r["status"] for r in records}),
    }


def main(argv: list[str] | None = None) -> int:
    import torch
    import tyro

    cfg = tyro.cli(GpuBenchConfig, args=argv)
    if cfg.device == "cuda" and not torch.cuda.is_available():
        print(f"bench_gpu: no CUDA device: nothing measured, {cfg.out} left as it is. On a GPU it measures: {PLAN}")
        return 0
    payload = {
        **result_header(
            "GPU runner: openvla-7b chunk latency/memory, vectorized rollouts", "benchmarks.bench_gpu", argv
        )
    }
    payload["chunk_latency"] = chunk_latency(cfg)
    print(json.dumps(payload["chunk_latency"]))
    if cfg.device == "cuda":
        doctor = subprocess.run(vla_command("doctor"), capture_output=True, text=True)
        payload["doctor"] = {"returncode": doctor.returncode, "report": doctor.stdout[-6000:]}
        with tempfile.TemporaryDirectory(prefix="bench_gpu_") as tmp:
            payload["vectorized_rollouts"] = vectorized_rollouts(cfg, Path(tmp))
        print(json.dumps(payload["vectorized_rollouts"]))
    write_result(cfg.out, payload)
    print(f"wrote {cfg.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
