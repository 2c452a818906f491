"""Action-chunk latency of the flow-matching head vs the L1 head, same model size, same machine, one run ->
benchmarks/results/heads.json.

    .venv/bin/python -m benchmarks.bench_heads [--repeats 30] [--threads 2]

The tiny preset as the demo recipe builds it (one 128 px head view, proprio, 8 x 14 chunk; random init, float32)
with ``action_head`` l1, tokens (parallel decoding) and flow (K = 1, 5, 10 Euler steps). The backbones are
identical (same seed) so the heads are the only difference. Calls of all variants are interleaved, so load from
other processes hits them alike; ``VLA.predict_action_chunk`` under ``torch.inference_mode``, batch 1. Also the
head alone (the flow head's K velocity evaluations on fixed hidden states vs the L1 head's one pass).
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time
from pathlib import Path

from benchmarks.common import result_header, write_result

RESULTS = Path(__file__).resolve().parent / "results" / "heads.json"
VARIANTS = {
    "l1": {"action_head": "l1"},
    "tokens_parallel": {"action_head": "tokens", "token_decoding": "parallel"},
    "flow_k1": {"action_head": "flow", "flow_steps": 1},
    "flow_k5": {"action_head": "flow", "flow_steps": 5},
    "flow_k10": {"action_head": "flow", "flow_steps": 10},
}


@dataclasses.dataclass
class HeadsBenchConfig:
    """Head latency benchmark settings."""

    repeats: int = 30
    """Timed calls per variant (after 3 warm-up calls)."""
    threads: int = 2
    """torch threads."""
    out: Path = RESULTS
    """Output JSON."""

    def __post_init__(self) -> None:
        if self.repeats < 1 or self.threads < 1:
            raise ValueError(f"repeats and threads must be >= 1, got {self.repeats} and {self.threads}")


def _models():
    import numpy as np
    import torch

    from policies.openvla.config import preset
    from policies.openvla.model import VLA
    from policies.openvla.processor import VLAProcessor
    from policies.openvla.tokenizer import config_for_tokenizer, train_instruction_tokenizer

    tok = train_instruction_tokenizer(["lift the bar with both arms", "grasp both ends of the bar and raise it level"])
    models = {}
    for name, over in VARIANTS.items():
        cfg = config_for_tokenizer(preset("tiny", cameras=("head",), image_aug=False, center_crop=False, **over), tok)
        torch.manual_seed(0)
        models[name] = VLA(cfg).eval()
    base = models["l1"].state_dict()
    for model in models.values():  # the same backbone everywhere: only the head differs
        model.load_state_dict({k: v for k, v in base.items() if not k.startswith("action_head")}, strict=False)
    cfg = models["l1"].config
    images = np.random.default_rng(0).integers(0, 256, (1, 1, 128, 128, 3), dtype=np.uint8)
    inputs = VLAProcessor(cfg, tok)(images, ["lift the bar with both arms"], train=False)
    inputs["proprio"] = torch.zeros(1, cfg.proprio_dim)
    return models, inputs


def _summary(ms: list[float]) -> dict:
    ms = sorted(ms)
    return {"median_ms": round(statistics.median(ms), 3), "p90_ms": round(ms[int(0.9 * (len(ms) - 1))], 3)}


def main(argv: list[str] | None = None) -> int:
    import torch
    import tyro

    cfg = tyro.cli(HeadsBenchConfig, args=argv)
    torch.set_num_threads(cfg.threads)
    models, inputs = _models()
    chunk_ms: dict[str, list[float]] = {n: [] for n in models}
    head_ms: dict[str, list[float]] = {n: [] for n in models if n != "tokens_parallel"}
    with torch.inference_mode():
        hidden = models["l1"].action_hidden_states(**inputs)
        for i in range(cfg.repeats + 3):
            for name, model in models.items():
                t = time.perf_counter()
                chunk = model.predict_action_chunk(**inputs)
                if i >= 3:
                    chunk_ms[name].append(1000 * (time.perf_counter() - t))
                assert tuple(chunk.shape) == (1, 8, 14)
                if name in head_ms:
                    head = model.action_head
                    t = time.perf_counter()
                    head(hidden) if name == "l1" else head.sample(hidden)
                    if i >= 3:
                        head_ms[name].append(1000 * (time.perf_counter() - t))
    chunk = {n: _summary(v) for n, v in chunk_ms.items()}
    heads = {n: _summary(v) for n, v in head_ms.items()}
    l1 = chunk["l1"]["median_ms"]
    payload = {
        **result_header("action chunk latency: flow-matching head vs L1 head", "benchmarks.bench_heads", argv),
        "setup": "tiny preset, 1 x 128 px head view + proprio, 8 x 14 chunk, batch 1, float32, random init, "
        f"{cfg.threads} threads, {cfg.repeats} interleaved calls per variant",
        "chunk_latency": chunk,
        "ratio_to_l1": {n: round(v["median_ms"] / l1, 3) for n, v in chunk.items()},
        "head_only": heads,
        "parameters": {
            n: sum(p.numel() for p in m.action_head.parameters()) for n, m in models.items() if m.action_head
        },
    }
    write_result(cfg.out, payload)
    for name, row in chunk.items():
        print(f"{name:16s} {row['median_ms']:8.2f} ms  ({payload['ratio_to_l1'][name]:.2f}x l1)")
    print(f"wrote {cfg.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
