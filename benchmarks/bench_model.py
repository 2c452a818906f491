"""Model benchmark: action-chunk latency of the ``tiny`` VLA on this CPU and trainable parameter counts.

Measures ``VLA.predict_action_chunk`` (batch 1, 2 views of 128 px + proprio, L1 head, 8 x 14 chunk) in float32 and
bfloat16 with the given thread counts, the processor's preprocessing of two 256 px views, one training step
(forward + backward, batch 8) of the tiny model, and parameter counts of both presets (the 7B one on the meta
device, nothing allocated). Writes JSON with the exact command, versions, threads, load average and timestamps.

    .venv/bin/python benchmarks/bench_model.py --compile --out benchmarks/results/model.json

Repetitions of the two dtypes are interleaved so that load from other processes hits both alike; the machine's
load average before and after is recorded because other jobs share these cores. ``process_cpu_median_ms`` is the
CPU time this process used per chunk (summed over its threads): with 1 thread it is the compute cost even when other
jobs delay the wall clock; with 2 threads under contention it also counts OpenMP spin-waiting.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import cpu_name, write_result  # noqa: E402
from policies.openvla.config import preset  # noqa: E402
from policies.openvla.lora import apply_lora, count_parameters  # noqa: E402
from policies.openvla.model import VLA  # noqa: E402
from policies.openvla.processor import VLAProcessor  # noqa: E402
from policies.openvla.tokenizer import config_for_tokenizer, train_instruction_tokenizer  # noqa: E402

INSTRUCTIONS = ["place the shoe on the mat", "pick up the red cube and put it in the bowl", "open the drawer"]


def _summary(seconds: list[float]) -> dict:
    ms = sorted(1000 * s for s in seconds)
    return {
        "median_ms": round(statistics.median(ms), 3),
        "min_ms": round(ms[0], 3),
        "p90_ms": round(ms[int(0.9 * (len(ms) - 1))], 3),
        "mean_ms": round(statistics.fmean(ms), 3),
        "n": len(ms),
    }


def _tiny_setup():
    tok = train_instruction_tokenizer(INSTRUCTIONS)
    cfg = config_for_tokenizer(preset("tiny"), tok)
    torch.manual_seed(0)
    model = VLA(cfg).eval()
    proc = VLAProcessor(cfg, tok)
    images = np.random.default_rng(0).integers(0, 256, (1, 2, 256, 256, 3), dtype=np.uint8)
    return cfg, model, proc, images


def bench_latency(threads: int, repeats: int, warmup: int) -> dict:
    """Median / min / p90 chunk latency in ms per dtype, plus preprocessing time."""
    torch.set_num_threads(threads)
    cfg, model, proc, images = _tiny_setup()
    inputs = proc(images, [INSTRUCTIONS[0]], train=False)
    inputs["proprio"] = torch.zeros(1, cfg.proprio_dim)
    models = {"float32": model, "bfloat16": VLA(cfg).eval().to(torch.bfloat16)}
    models["bfloat16"].load_state_dict(model.state_dict())
    times: dict[str, list[float]] = {k: [] for k in models}
    cpu: dict[str, list[float]] = {k: [] for k in models}
    pre: list[float] = []
    with torch.inference_mode():
        for m in models.values():
            for _ in range(warmup):
                m.predict_action_chunk(**inputs)
        for _ in range(repeats):
            t = time.perf_counter()
            proc(images, [INSTRUCTIONS[0]], train=False)
            pre.append(time.perf_counter() - t)
            for name, m in models.items():
                t, c = time.perf_counter(), time.process_time()
                chunk = m.predict_action_chunk(**inputs)
                times[name].append(time.perf_counter() - t)
                cpu[name].append(time.process_time() - c)
    if chunk.shape != (1, 8, 14):
        raise RuntimeError(f"unexpected chunk shape {tuple(chunk.shape)}")
    out = {
        name: {**_summary(ts), "process_cpu_median_ms": round(1000 * statistics.median(cpu[name]), 3)}
        for name, ts in times.items()
    }
    out["preprocess_2x256px"] = _summary(pre)
    out["sequence_length"] = int(
        inputs["input_ids"].shape[1] + 2 * cfg.num_patches_per_view + 1 + cfg.n_action_slots + 1
    )
    return out


def bench_compiled(threads: int, repeats: int, warmup: int) -> dict:
    """Chunk latency after ``VLA.compile_submodules()`` (torch.compile, inductor), per dtype, plus compile time."""
    torch.set_num_threads(threads)
    cfg, model, proc, images = _tiny_setup()
    inputs = proc(images, [INSTRUCTIONS[0]], train=False)
    inputs["proprio"] = torch.zeros(1, cfg.proprio_dim)
    out = {}
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        m = VLA(cfg).eval().to(dtype)
        m.load_state_dict(model.state_dict())
        m.compile_submodules()
        with torch.inference_mode():
            t = time.perf_counter()
            m.predict_action_chunk(**inputs)
            compile_s = time.perf_counter() - t
            for _ in range(warmup):
                m.predict_action_chunk(**inputs)
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                m.predict_action_chunk(**inputs)
                times.append(time.perf_counter() - t)
        out[name] = {**_summary(times), "first_call_s": round(compile_s, 1)}
    return out


def _cpu_busy_fraction(seconds: float = 1.0) -> float:
    """Fraction of all CPU time spent busy over ``seconds`` (from /proc/stat) -- other jobs, as we sleep."""

    def sample():
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait

    try:
        t0, i0 = sample()
        time.sleep(seconds)
        t1, i1 = sample()
    except OSError:
        return float("nan")
    return round(1.0 - (i1 - i0) / max(1, t1 - t0), 3)


def bench_train_step(threads: int, repeats: int, batch: int) -> dict:
    """Forward + backward (full fine-tuning, float32) of the tiny model on one batch."""
    torch.set_num_threads(threads)
    cfg, model, proc, _ = _tiny_setup()
    model.train()
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (batch, 2, 256, 256, 3), dtype=np.uint8)
    inputs = proc(
        images, [INSTRUCTIONS[i % 3] for i in range(batch)], train=True, generator=torch.Generator().manual_seed(0)
    )
    inputs["proprio"] = torch.zeros(batch, cfg.proprio_dim)
    actions = torch.from_numpy(rng.uniform(-1, 1, (batch, 8, 14)).astype(np.float32))
    times = []
    for i in range(repeats + 1):
        t = time.perf_counter()
        model(**inputs, actions=actions)["loss"].backward()
        model.zero_grad(set_to_none=True)
        if i:  # the first step is warm-up
            times.append(time.perf_counter() - t)
    return {"batch": batch, "float32_forward_backward": _summary(times)}


def parameter_counts() -> dict:
    """Total / trainable parameters: full fine-tuning and default LoRA (r 32, alpha 16, LLM + projector)."""
    out = {}
    for name in ("tiny", "openvla-7b"):
        cfg = preset(name)
        with torch.device("meta"):
            model = VLA(cfg, skip_init=True)
        trainable_full, total = count_parameters(model)
        lora_trainable, lora_total = count_parameters(apply_lora(model))
        heads = sum(
            p.numel() for n, p in model.named_parameters() if n.startswith(("action_head", "proprio_projector"))
        )
        out[name] = {
            "total": total,
            "trainable_full_finetune": trainable_full,
            "trainable_lora_r32": lora_trainable,
            "lora_adapter_params": lora_total - total,
            "heads_params": heads,
            "note": "vocab as in the preset; tiny's vocabulary follows its tokenizer",
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "model.json")
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--train-repeats", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd models (slow to build)")
    args = parser.parse_args()
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    load_before, busy_before = os.getloadavg(), _cpu_busy_fraction()
    latency = {f"threads_{n}": bench_latency(n, args.repeats, args.warmup) for n in args.threads}
    busy_after_latency = _cpu_busy_fraction()
    compiled = (
        {f"threads_{args.threads[0]}": bench_compiled(args.threads[0], args.repeats, args.warmup)}
        if args.compile
        else "not run (pass --compile)"
    )
    train = {f"threads_{n}": bench_train_step(n, args.train_repeats, 8) for n in args.threads[:1]}
    params = parameter_counts()
    result = {
        "benchmark": "model",
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "started_utc": started,
        "finished_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cpu": cpu_name(),
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "cpu_busy_fraction_before": busy_before,
            "cpu_busy_fraction_after_latency": busy_after_latency,
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": _version("transformers"),
            "peft": _version("peft"),
        },
        "setup": {
            "preset": "tiny",
            "batch": 1,
            "views": 2,
            "image_px": 128,
            "proprio": True,
            "action_head": "l1",
            "chunk": [8, 14],
            "call": "VLA.predict_action_chunk under torch.inference_mode",
            "threads_tested": args.threads,
            "target_ms": 20.0,
        },
        "chunk_latency_cpu": latency,
        "chunk_latency_cpu_compiled": compiled,
        "train_step_cpu": train,
        "parameters": params,
        "gpu": {
            "measured": False,
            "reason": "no CUDA device in this session (torch.cuda.is_available() is "
            f"{torch.cuda.is_available()}); GPU latency was not measured",
        },
    }
    write_result(args.out, result)
    print(
        json.dumps(
            {
                "cpu_busy_fraction_before": busy_before,
                "chunk_latency_cpu": latency,
                "chunk_latency_cpu_compiled": compiled,
                "train_step_cpu": train,
            },
            indent=2,
        )
    )


def _version(module: str) -> str:
    import importlib

    return getattr(importlib.import_module(module), "__version__", "?")


if __name__ == "__main__":
    main()
