"""Training benchmark of the ``tiny`` preset with ``train.trainer.train``: step time, samples/s, data-wait fraction,
peak RSS; and the dataloader headroom (loader samples/s / model samples/s, required >= 5).

Realistic demo settings: 2 views (head, left_wrist) stored at 256 px as ``vla demos`` writes them and fed to the
model at 128 px, 14-D proprio, chunk 8, batch 16, full fine-tuning, AdamW; fp32 and bf16 autocast. The episodes
are synthesized exactly as ``benchmarks/bench_dataloader.py`` does. Each configuration trains in a fresh forked
process (the parent imports no torch) for ``warmup + timed`` steps with log_every=1; the timed steps' metrics
(``train/samples_per_s``, ``train/data_wait_frac``) give the numbers. Step time includes the main-process image
preprocessing + augmentation (the loader workers only read uint8 frames).

    .venv/bin/python benchmarks/bench_train.py        # writes benchmarks/results/train.json and fills the
                                                      # model_step / headroom fields of dataloader.json
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import os
import resource
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_dataloader import BenchConfig as LoaderConfig  # noqa: E402
from benchmarks.bench_dataloader import _display_path, synthesize  # noqa: E402
from benchmarks.common import machine_info, write_result  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


@dataclasses.dataclass
class BenchConfig:
    """Training benchmark settings."""

    episodes: int = 8
    """Synthetic episodes (as in the dataloader benchmark)."""
    steps: int = 150
    """Steps per episode."""
    image_size: int = 256
    """Stored frame side (px); the tiny model resizes to 128."""
    batch_size: int = 16
    """Samples per step (one process, grad_accum 1)."""
    chunk_size: int = 8
    """Action chunk length."""
    runs: tuple[str, ...] = ("no:2:1", "bf16:2:1", "no:0:1", "no:2:2")
    """Configurations as mixed_precision:num_workers:torch_threads. One thread is the reference: on these 2 shared
    cores two OpenMP threads contend with the other jobs (and the workers) and run several times slower."""
    warmup: int = 2
    """Untimed steps (first-iteration allocations, worker start-up)."""
    timed: int = 10
    """Timed steps per configuration."""
    data_dir: Path | None = None
    """Use this episode folder instead of synthesizing one."""
    out: Path = RESULTS / "train.json"
    """JSON to write."""
    dataloader_json: Path = RESULTS / "dataloader.json"
    """Dataloader results to compare with (its model_step / headroom fields are filled in); skipped if absent."""


def _measure(folder: str, cfg: BenchConfig, precision: str, workers: int, threads: int, queue) -> None:
    """Child: train warmup + timed steps, report timings from metrics.jsonl and the peak RSS."""
    import torch

    from train.logging_utils import read_metrics
    from train.train_config import TrainConfig
    from train.trainer import train

    with tempfile.TemporaryDirectory(prefix="bench_train_run_") as run:
        tc = TrainConfig.from_flat(
            data=Path(folder),
            out=Path(run) / "run",
            preset="tiny",
            cameras=("head", "left_wrist"),
            chunk_size=cfg.chunk_size,
            use_proprio=True,
            instructions="both",
            batch_size=cfg.batch_size,
            steps=cfg.warmup + cfg.timed,
            mixed_precision=precision,
            num_workers=workers,
            threads=threads,
            log_every=1,
            save_every=10**9,
            val_every=10**9,
            progress=False,
        )
        t0 = time.perf_counter()
        result = train(tc)
        total_s = time.perf_counter() - t0
        records = [r for r in read_metrics(tc.out) if "train/samples_per_s" in r and r["step"] > cfg.warmup]
        ckpt_mib = sum(p.stat().st_size for p in result.last_checkpoint.rglob("*") if p.is_file()) / 2**20
    step_s = [cfg.batch_size / r["train/samples_per_s"] for r in records]
    wait_s = [f * s for f, s in zip((r["train/data_wait_frac"] for r in records), step_s)]
    queue.put(
        {
            "mixed_precision": precision,
            "num_workers": workers,
            "batch_size": cfg.batch_size,
            "torch_threads": torch.get_num_threads(),
            "timed_steps": len(records),
            "step_s_median": statistics.median(step_s),
            "step_s_mean": statistics.fmean(step_s),
            "step_s_min": min(step_s),
            "samples_per_s": cfg.batch_size * len(step_s) / sum(step_s),
            "data_wait_frac": sum(wait_s) / sum(step_s),
            "loss_first": records[0]["train/loss"],
            "loss_last": records[-1]["train/loss"],
            "wall_s_including_setup_and_final_checkpoint": round(total_s, 2),
            "checkpoint_mib": round(ckpt_mib, 1),
            "peak_rss_mib_main": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "peak_rss_mib_largest_worker": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
        }
    )


def _headroom(runs: list[dict], loader: dict | None) -> dict:
    """Loader samples/s (128 px, same num_workers) / model samples/s, per run."""
    if loader is None:
        return {"note": "no dataloader.json to compare with"}
    by_workers = {r["num_workers"]: r["samples_per_s"] for r in loader["results"] if r["out_size"] == 128}
    out = {}
    for r in runs:
        key = f"{r['mixed_precision']}_workers{r['num_workers']}_threads{r['torch_threads']}"
        lsps = by_workers.get(r["num_workers"])
        out[key] = {
            "loader_samples_per_s": lsps,
            "model_samples_per_s": round(r["samples_per_s"], 2),
            "headroom": round(lsps / r["samples_per_s"], 1) if lsps else None,
        }
    return out


def _fill_dataloader_json(path: Path, reference: dict, source: str) -> None:
    """Write model_step and per-result model_samples_per_s / headroom into the dataloader results (atomic)."""
    data = json.loads(path.read_text())
    sps = reference["samples_per_s"]
    data["model_step"] = {
        "samples_per_s": round(sps, 2),
        "source": source,
        "note": "tiny preset full fine-tune, batch 16, 2 views 256 px -> 128 px, proprio, chunk 8, fp32, "
        f"num_workers {reference['num_workers']}, {reference['torch_threads']} torch thread(s), on this "
        "machine (train.json has bf16 and other worker / thread counts). The 128 px loader results get "
        "headroom = loader samples/s / model samples/s (required >= 5); 224 px is the openvla-7b input "
        "size, whose step could not be measured without a GPU. The loader benchmark's collate resizes in "
        "its workers, while the trainer preprocesses in the main process (counted in the model step).",
    }
    for r in data["results"]:
        if r["out_size"] == 128:
            r["model_samples_per_s"] = round(sps, 2)
            r["headroom"] = round(r["samples_per_s"] / sps, 1)
    write_result(path, data)


def run(cfg: BenchConfig) -> dict:
    """Synthesize (or reuse) the episodes, measure every configuration, write the JSON files; return train.json."""
    ctx = mp.get_context("fork")
    started, load_before = time.strftime("%Y-%m-%dT%H:%M:%S%z"), os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_train_data_") as tmp:
        folder = Path(cfg.data_dir or tmp)
        lcfg = LoaderConfig(episodes=cfg.episodes, steps=cfg.steps, image_size=cfg.image_size)
        data = synthesize(folder, lcfg) if cfg.data_dir is None else {"data_dir": str(folder)}
        results = []
        for spec in cfg.runs:
            precision, workers, threads = spec.split(":")
            queue = ctx.Queue()
            proc = ctx.Process(target=_measure, args=(str(folder), cfg, precision, int(workers), int(threads), queue))
            proc.start()
            result = queue.get()
            proc.join()
            print(json.dumps(result), flush=True)
            results.append(result)
    loader = json.loads(cfg.dataloader_json.read_text()) if cfg.dataloader_json.is_file() else None
    report = {
        "benchmark": "train",
        "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]),
        "started": started,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "config": {k: (_display_path(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()},
        "setup": "tiny preset (random init, byte-level BPE on the instructions), finetune=full, AdamW lr 5e-4, "
        "2 views 128 px, proprio, L1 head, chunk 8, image augmentation on, one process",
        "data": data,
        "results": results,
        "headroom_vs_dataloader": _headroom(results, loader),
        "openvla_7b_lora_batch8": {
            "measured": False,
            "reason": "no GPU in this session (CPU-only machine; the device machine was not lent to this task): "
            "openvla-7b LoRA samples/s and memory at batch 8 could not be measured here. Reference: "
            "OpenVLA-OFT reports ~62 GB at batch 8 per GPU (bf16 weights 15.1 GB).",
        },
        "notes": "Step time = batch / train/samples_per_s of each timed step (wall time of the optimizer step "
        "including waiting for data, main-process preprocessing, forward, backward, clip, AdamW). Other "
        "jobs share these 2 cores (see loadavg); numbers are this machine's, not a GPU's.",
    }
    write_result(cfg.out, report)
    reference = next(
        (r for r in results if r["mixed_precision"] == "no" and r["num_workers"] == 2 and r["torch_threads"] == 1),
        results[0],
    )
    if loader is not None:
        _fill_dataloader_json(
            cfg.dataloader_json,
            reference,
            f"{_display_path(cfg.out)} (mixed_precision "
            f"{reference['mixed_precision']}, num_workers "
            f"{reference['num_workers']})",
        )
    return report


if __name__ == "__main__":
    import tyro

    run(tyro.cli(BenchConfig))
