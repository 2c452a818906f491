"""Dataloader throughput of ``train.dataset.EpisodeDataset``: samples/s, per-sample latency and peak RSS.

Synthesizes a recorder-like folder in a temp dir (episodes x steps, S x S images for the given cameras, stored as
``vla demos`` writes them: per-frame chunks (1, S, S, 3) with lzf compression), then for every (output size,
num_workers) pair runs a fresh forked process (torch is imported there) that builds the dataset (validation + norm
stats) and iterates a shuffled ``torch.utils.data.DataLoader`` whose collate resizes the views to the output size
with ``torch.nn.functional.interpolate`` (uint8, bilinear, antialias) -- a stand-in for the model's processor.

    python benchmarks/bench_dataloader.py                       # writes benchmarks/results/dataloader.json

The loader must not be the bottleneck: ``headroom = loader samples/s / model samples/s`` should be >= 5. The model
step is measured later by the trainer benchmark; ``model_step`` is left null here for that comparison.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import os
import resource
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import machine_info, write_result  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "dataloader.json"


@dataclasses.dataclass
class BenchConfig:
    """Dataloader benchmark settings."""

    episodes: int = 8
    """Synthetic episodes to write."""
    steps: int = 150
    """Steps per episode."""
    image_size: int = 256
    """Stored square frame side (px)."""
    cameras: tuple[str, ...] = ("head", "left_wrist")
    """Views per sample."""
    out_sizes: tuple[int, ...] = (224, 128)
    """Side (px) the collate transform resizes to."""
    workers: tuple[int, ...] = (0, 2)
    """DataLoader num_workers values to measure."""
    batch_size: int = 16
    """Samples per batch."""
    chunk_size: int = 8
    """Action chunk length."""
    warmup_batches: int = 4
    """Batches drawn before timing starts (includes worker start-up)."""
    batches: int = 60
    """Timed batches per configuration."""
    latency_samples: int = 200
    """Samples timed one by one (``dataset[i]``, no DataLoader) for the per-sample latency."""
    data_dir: Path | None = None
    """Use this existing episode folder instead of synthesizing one."""
    out: Path = RESULTS
    """JSON file to write."""


def _frame(rng: np.random.Generator, background: np.ndarray, t: int, num_steps: int) -> np.ndarray:
    """A render-like frame: a fixed textured background plus two objects and an 'arm' moving with t."""
    img = background.copy()
    s = img.shape[0]
    phase = t / max(1, num_steps - 1)
    for k, color in enumerate(((200, 40, 40), (40, 160, 60), (90, 90, 100))):
        cx = int(s * (0.2 + 0.6 * ((phase + 0.3 * k) % 1.0)))
        cy = int(s * (0.3 + 0.2 * k + 0.1 * np.sin(2 * np.pi * phase)))
        half = s // (10 + 4 * k)
        img[max(0, cy - half) : cy + half, max(0, cx - half) : cx + half] = color
    return img


def synthesize(folder: Path, cfg: BenchConfig) -> dict:
    """Write ``cfg.episodes`` episodes in the recorder's layout; return size facts for the JSON."""
    import h5py

    from envs.layout import ACTION_LAYOUT, CAMERA_TO_HDF5_KEY

    rng = np.random.default_rng(0)
    s, n = cfg.image_size, cfg.steps
    yy, xx = np.mgrid[0:s, 0:s] / s
    for i in range(cfg.episodes):
        with h5py.File(folder / f"episode_{i}.hdf5", "w") as f:
            for c, cam in enumerate(cfg.cameras):
                grad = np.stack([120 + 60 * yy, 110 + 50 * xx + 10 * c, 100 + 40 * (xx + yy) / 2], axis=-1)
                texture = rng.integers(-6, 7, size=(s, s, 1))  # table/wall texture, fixed per view
                background = np.clip(grad + texture, 0, 255).astype(np.uint8)
                ds = f.create_dataset(
                    CAMERA_TO_HDF5_KEY[cam], shape=(n, s, s, 3), dtype=np.uint8, chunks=(1, s, s, 3), compression="lzf"
                )
                for t in range(n):
                    ds[t] = _frame(rng, background, t, n)
            action = np.cumsum(rng.normal(0, 0.01, size=(n, 14)), axis=0)
            action[:, [6, 13]] = np.where(np.arange(n)[:, None] < n // 2, 1.0, -1.0)
            f["action"] = action
            f["relative_action"] = np.concatenate([np.diff(action, axis=0), np.diff(action, axis=0)[-1:]])
            f["proprio"] = action + rng.normal(0, 0.002, size=action.shape)
            f["seen"] = np.array(["pick up the cube", "lift the red cube"], dtype=h5py.string_dtype())
            f["unseen"] = np.array(["raise the block"], dtype=h5py.string_dtype())
            f.attrs["task"] = "BenchSynthetic-v1"
            f.attrs["action_layout"] = json.dumps(list(ACTION_LAYOUT))
    files = sorted(folder.glob("episode_*.hdf5"))
    total = sum(p.stat().st_size for p in files)
    frames = cfg.episodes * cfg.steps * len(cfg.cameras)
    return {
        "episodes": cfg.episodes,
        "steps": cfg.steps,
        "image_size": s,
        "cameras": list(cfg.cameras),
        "bytes_on_disk": total,
        "compressed_bytes_per_frame": round(total / frames),
        "raw_bytes_per_frame": s * s * 3,
        "compression": "lzf, chunks (1, S, S, 3)",
    }


class Resize:
    """Collate transform stand-in: uint8 (B, V, H, W, 3) -> float32 (B, V, 3, size, size) in [0, 1].

    Resizes in uint8 (bilinear, antialias: torch's vectorized uint8 channels-last kernel, ~10x faster than the
    float path on CPU), then converts to float.
    """

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, images, instructions):
        import torch.nn.functional as F

        b, v, h, w, _ = images.shape
        x = images.reshape(b * v, h, w, 3).permute(0, 3, 1, 2)  # (B*V, 3, H, W) uint8, channels-last in memory
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        x = x.float().div_(255.0)
        return {"pixel_values": x.reshape(b, v, 3, self.size, self.size), "num_prompts": len(instructions)}


def _measure(folder: str, cfg: BenchConfig, out_size: int, workers: int, queue) -> None:
    """Child process body: build, time, report through ``queue``."""
    import torch

    from train.config import DataConfig
    from train.dataset import EpisodeDataset
    from train.stats import prepare_data

    t0 = time.perf_counter()
    dcfg = DataConfig(
        data_dir=Path(folder), cameras=cfg.cameras, chunk_size=cfg.chunk_size, use_proprio=True, instructions="both"
    )
    prepared = prepare_data(dcfg)
    ds = EpisodeDataset(dcfg, prepared.train_episodes, prepared.norm_stats, transform=Resize(out_size))
    build_s = time.perf_counter() - t0
    latency = {}
    if workers == 0:  # per-sample latency of dataset[i] alone, random order
        idx = np.random.default_rng(1).integers(0, len(ds), size=cfg.latency_samples)
        times = []
        for i in idx:
            s0 = time.perf_counter()
            ds[int(i)]
            times.append(time.perf_counter() - s0)
        ms = np.array(times) * 1e3
        latency = {
            "sample_ms_mean": float(ms.mean()),
            "sample_ms_p50": float(np.median(ms)),
            "sample_ms_p95": float(np.percentile(ms, 95)),
        }
        batch = [ds[int(i)] for i in idx[: cfg.batch_size]]
        c0 = time.perf_counter()
        for _ in range(5):
            ds.collate_fn(batch)
        latency["collate_transform_ms_per_batch"] = (time.perf_counter() - c0) / 5 * 1e3
        ds.close()
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=cfg.batch_size,
        shuffle=True,
        num_workers=workers,
        collate_fn=ds.collate_fn,
        drop_last=True,
        generator=torch.Generator().manual_seed(0),
    )
    # Time batches warmup .. warmup+batches, but always finish the epoch (no abandoned worker iterators).
    total, t_start, t_end, batches = cfg.warmup_batches + cfg.batches, None, None, 0
    while t_end is None:
        for _batch in loader:
            batches += 1
            if batches == cfg.warmup_batches:
                t_start = time.perf_counter()
            elif batches == total:
                t_end = time.perf_counter()
    elapsed = t_end - t_start
    del loader
    rss_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rss_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    queue.put(
        {
            "out_size": out_size,
            "num_workers": workers,
            "batch_size": cfg.batch_size,
            "multiprocessing_context": torch.multiprocessing.get_start_method() if workers else None,
            "samples_per_s": cfg.batches * cfg.batch_size / elapsed,
            "ms_per_batch": elapsed / cfg.batches * 1e3,
            "ms_per_sample_amortized": elapsed / (cfg.batches * cfg.batch_size) * 1e3,
            "timed_batches": cfg.batches,
            "build_s (validate + stats + index)": build_s,
            **latency,
            "peak_rss_mib_main": round(rss_self, 1),
            "peak_rss_mib_largest_worker": round(rss_children, 1),
            "torch_threads_main": torch.get_num_threads(),
            "num_samples": len(ds),
            "pixel_values_shape": list(batch["pixel_values"].shape),
            "model_samples_per_s": None,
            "headroom": None,
        }
    )


def _display_path(path: Path) -> str:
    """``path`` relative to the repository when inside it (results JSON is committed)."""
    try:
        return str(path.resolve().relative_to(Path(__file__).resolve().parents[1]))
    except ValueError:
        return str(path)


def run(cfg: BenchConfig) -> dict:
    """Synthesize (or use ``cfg.data_dir``), measure every configuration, write ``cfg.out``; return the JSON."""
    ctx = mp.get_context("fork")  # the parent has imported no torch; DataLoader workers fork as in training
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_dataloader_") as tmp:
        folder = Path(cfg.data_dir or tmp)
        t0 = time.perf_counter()
        data = synthesize(folder, cfg) if cfg.data_dir is None else {"data_dir": str(folder)}
        data["synthesize_s"] = round(time.perf_counter() - t0, 2)
        results = []
        for out_size in cfg.out_sizes:
            for workers in cfg.workers:
                queue = ctx.Queue()
                proc = ctx.Process(target=_measure, args=(str(folder), cfg, out_size, workers, queue))
                proc.start()
                result = queue.get()
                proc.join()
                print(json.dumps(result), flush=True)
                results.append(result)
    report = {
        "benchmark": "dataloader",
        "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]),
        "started": started,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "config": {k: (_display_path(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()},
        "data": data,
        "summary_samples_per_s": {
            f"{r['out_size']}px_workers{r['num_workers']}": round(r["samples_per_s"], 1) for r in results
        },
        "results": results,
        "model_step": {
            "samples_per_s": None,
            "source": None,
            "note": "fill from the trainer benchmark (same machine, same views/size); per result "
            "headroom = samples_per_s / model samples_per_s, requirement >= 5",
        },
        "notes": "Files are freshly written, so reads come from the page cache (as for a dataset that fits in "
        "RAM). The synthetic frames carry a per-pixel texture, so lzf compresses them less than clean "
        "renders (pessimistic for the loader). Each configuration runs in its own forked process (parent "
        "without torch) and DataLoader workers fork from it; peak RSS is that process's ru_maxrss and, for "
        "workers > 0, the largest worker's.",
    }
    write_result(cfg.out, report)
    return report


if __name__ == "__main__":
    import tyro

    run(tyro.cli(BenchConfig))
